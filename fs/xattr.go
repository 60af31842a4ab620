package fs

import (
	"strings"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// Extended attributes every file in the mount offers.
const (
	xattrHash = "user.theater.hash" // the blob's hash
	xattrRefs = "user.theater.refs" // a label's refs, oldest first, one a line
)

// xattrReply copies val into dest as getxattr(2) wants: the size alone for
// a zero-length buffer, ERANGE with the size for one too small.
func xattrReply(val []byte, dest []byte) (uint32, syscall.Errno) {
	if len(dest) == 0 {
		return uint32(len(val)), 0
	}
	if len(dest) < len(val) {
		return uint32(len(val)), syscall.ERANGE
	}
	return uint32(copy(dest, val)), 0
}

// xattrNames lists attribute names NUL-terminated, for listxattr(2).
func xattrNames(names ...string) []byte {
	return []byte(strings.Join(names, "\x00") + "\x00")
}

// noXattrs answers setxattr and removexattr on labels and their
// directories, which keep no attributes: ENOTSUP lets cp -a and rsync -X
// carry on without them (ENODATA, go-fuse's default, fails cp -a of a
// directory).
func (f *fsys) noXattrs() syscall.Errno {
	if f.readOnly {
		return syscall.EROFS
	}
	return syscall.ENOTSUP
}

func refsValue(refs []store.Hash) []byte {
	var b []byte
	for _, h := range refs {
		b = append(b, h.String()...)
		b = append(b, '\n')
	}
	return b
}

// userOnly answers getxattr for every name outside the user. namespace
// (security.selinux, system.posix_acl_access, trusted.*) with ENOTSUP: the
// mount keeps no security labels and no ACLs. ENODATA would say "supported,
// just not set on this file", and tools ask again for every file: ls -l
// probes two names a file, two FUSE round trips each, where ENOTSUP lets it
// stop asking for the whole file system after the first.
type userOnly struct{ fuse.RawFileSystem }

func (u userOnly) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if !strings.HasPrefix(attr, "user.") {
		return 0, fuse.ENOTSUP
	}
	return u.RawFileSystem.GetXAttr(cancel, h, attr, dest)
}
