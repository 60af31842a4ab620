package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// BlobInfo is what a file system needs to show a blob.
type BlobInfo struct {
	Size    int64
	ModTime time.Time
	Ino     uint64
}

func blobInfo(fi os.FileInfo) BlobInfo {
	bi := BlobInfo{Size: fi.Size(), ModTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		bi.Ino = st.Ino
	}
	return bi
}

// openBlob opens data/<h> read-only on the owner, refusing a symlink or
// anything but a regular file. It opens relative to the data/ descriptor
// with O_NOFOLLOW: a blob name is 40 hex characters, so nothing can
// traverse, and a symlink fails with ELOOP rather than being followed.
//
// Reading a blob leaves its access time alone (O_NOATIME, where the store's
// files are the process's own): an atime update dirties the inode, and
// the next syncfs of a group commit would write it out.
func (s *Store) openBlob(h Hash) (*os.File, os.FileInfo, error) {
	name := h.String()
	const flags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_CLOEXEC
	fd, err := unix.Openat(int(s.dataDir.Fd()), name, flags|unix.O_NOATIME, 0)
	if errors.Is(err, syscall.EPERM) { // not the file's owner
		fd, err = unix.Openat(int(s.dataDir.Fd()), name, flags, 0)
	}
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			s.log.Warn("refusing blob that is a symlink", "hash", name)
			return nil, nil, blobErr(h, fmt.Errorf("%w: data file is a symlink", ErrCorrupt))
		}
		return nil, nil, blobErr(h, notFound(err))
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, DataDir, name))
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = fmt.Errorf("%w: data file is not a regular file", ErrCorrupt)
	}
	if err != nil {
		f.Close()
		return nil, nil, blobErr(h, err)
	}
	return f, fi, nil
}

// isSymlink reports whether name in r is a symlink. os.Root ignores
// O_NOFOLLOW: it follows a symlink that stays inside the root, and refuses
// one that leaves it with a "path escapes" error rather than ELOOP. So the
// store asks Lstat.
func isSymlink(r *os.Root, name string) bool {
	fi, err := r.Lstat(name)
	return err == nil && fi.Mode()&os.ModeSymlink != 0
}

// Open returns the blob's file, open read-only, after making sure its
// content hashes to its name (hashed once in the blob's life; the verdict is
// remembered). A blob that does not is ErrCorrupt. The caller closes it.
func (s *Store) Open(ctx context.Context, h Hash) (*os.File, BlobInfo, error) {
	type opened struct {
		f  *os.File
		fi os.FileInfo
	}
	o, err := call(ctx, s, func() (opened, error) {
		f, fi, err := s.openBlob(h)
		return opened{f, fi}, err
	})
	if err != nil {
		return nil, BlobInfo{}, err
	}
	if err := s.verify(ctx, h, o.f, o.fi); err != nil {
		o.f.Close()
		return nil, BlobInfo{}, err
	}
	return o.f, blobInfo(o.fi), nil
}

// verify hashes an open blob unless its verdict is known.
func (s *Store) verify(ctx context.Context, h Hash, f *os.File, fi os.FileInfo) error {
	if ok, known := s.verdicts.lookup(h, fi); known {
		if !ok {
			return blobErr(h, fmt.Errorf("%w: content does not hash to its name", ErrCorrupt))
		}
		return nil
	}
	sum, _, err := HashReader(io.NewSectionReader(&ctxReaderAt{ctx, f}, 0, fi.Size()))
	if err != nil && !errors.Is(err, ErrCollision) {
		return blobErr(h, err)
	}
	ok := err == nil && sum == h
	s.verdicts.record(h, fi, ok)
	if !ok {
		s.log.Error("blob does not hash to its name; refusing to serve it", "hash", h.String(), "got", sum.String(), "ino", blobInfo(fi).Ino, "err", err)
		return blobErr(h, fmt.Errorf("%w: content does not hash to its name", ErrCorrupt))
	}
	return nil
}

// ctxReaderAt stops a long hash when its context ends.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c *ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}

// Get returns a blob's content. Prefer Open for large blobs.
func (s *Store) Get(ctx context.Context, h Hash) ([]byte, error) {
	f, bi, err := s.Open(ctx, h)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, bi.Size)
	if _, err := io.ReadFull(f, b); err != nil {
		return nil, blobErr(h, err)
	}
	return b, nil
}

// Store saves content and returns its hash. Existing content is not
// rewritten.
func (s *Store) Store(ctx context.Context, content []byte) (Hash, error) {
	return s.putBytes(ctx, content, "", LabelNone)
}

// Exists reports whether the blob is in the store.
func (s *Store) Exists(ctx context.Context, h Hash) (bool, error) {
	return call(ctx, s, func() (bool, error) { return s.blobExists(h) })
}

// Stat returns a blob's size and modification time without verifying it.
func (s *Store) Stat(ctx context.Context, h Hash) (BlobInfo, error) {
	return call(ctx, s, func() (BlobInfo, error) {
		var st unix.Stat_t
		// Relative to the data/ descriptor, not following a symlink: a
		// blob name is one component, so os.Root's walk guards nothing
		// here and costs a lookup of every FUSE listing's entries.
		err := unix.Fstatat(int(s.dataDir.Fd()), h.String(), &st, unix.AT_SYMLINK_NOFOLLOW)
		if err != nil {
			return BlobInfo{}, blobErr(h, notFound(err))
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG {
			return BlobInfo{}, blobErr(h, ErrNotFound)
		}
		return BlobInfo{Size: st.Size, ModTime: time.Unix(st.Mtim.Unix()), Ino: st.Ino}, nil
	})
}

// ListAllContent returns the hash of every blob, sorted. Files in data/
// whose names are not hashes are skipped.
func (s *Store) ListAllContent(ctx context.Context) ([]Hash, error) {
	var out []Hash
	err := s.scanData(ctx, func(h Hash, _ os.DirEntry) error {
		out = append(out, h)
		return nil
	})
	slices.SortFunc(out, CompareHashes)
	return out, err
}

// CalculateTotalSize returns the total size of every blob in bytes.
func (s *Store) CalculateTotalSize(ctx context.Context) (int64, error) {
	var total int64
	err := s.scanData(ctx, func(h Hash, de os.DirEntry) error {
		fi, err := s.data.Lstat(de.Name())
		if err != nil {
			return nil // removed since listed
		}
		total += fi.Size()
		return nil
	})
	return total, err
}

// scanData calls fn for every blob-named regular file in data/, reading the
// directory in batches on the owner so memory stays flat.
func (s *Store) scanData(ctx context.Context, fn func(Hash, os.DirEntry) error) error {
	return s.eachDataEntry(ctx, func(de os.DirEntry) error {
		name := de.Name()
		if !de.Type().IsRegular() || !IsHashName(name) {
			return nil
		}
		h, _ := ParseHash(name)
		return fn(h, de)
	})
}

// eachDataEntry calls fn for every entry of data/, whatever it is, reading
// the directory in batches (opened on the owner) so memory stays flat.
//
// The directory is opened relative to the data/ descriptor rather than
// through os.Root: Go stats every entry of a directory read from an
// os.Root, one fstatat per blob, where the type the listing gives is all
// a scan needs. An entry's Info is not used (outside a Root it would stat
// by path); callers that need sizes or times ask s.data.Lstat.
func (s *Store) eachDataEntry(ctx context.Context, fn func(os.DirEntry) error) error {
	d, err := call(ctx, s, func() (*os.File, error) {
		fd, err := unix.Openat(int(s.dataDir.Fd()), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, err
		}
		return os.NewFile(uintptr(fd), filepath.Join(s.dir, DataDir)), nil
	})
	if err != nil {
		return &Error{Op: "list", Name: DataDir, Err: err}
	}
	defer d.Close()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		des, err := d.ReadDir(4096)
		for _, de := range des {
			if err := fn(de); err != nil {
				return err
			}
		}
		if err == io.EOF || len(des) == 0 {
			return nil
		}
		if err != nil {
			return &Error{Op: "list", Name: DataDir, Err: err}
		}
	}
}

// ResolveReference returns the content a reference names:
// "store:hash:<h>" a blob, "store:<label>" the single ref of a label (a
// label with several refs is ErrAmbiguous), anything else a file path.
func (s *Store) ResolveReference(ctx context.Context, ref string) ([]byte, error) {
	return ReadReference(ctx, s, ref)
}

// OpenReference is ResolveReference as a stream.
func (s *Store) OpenReference(ctx context.Context, ref string) (io.ReadCloser, error) {
	return OpenReference(ctx, s, ref)
}

// ResolveLabel returns the one ref of a label; more than one is
// ErrAmbiguous.
func (s *Store) ResolveLabel(ctx context.Context, name string) (Hash, error) {
	refs, err := s.GetByLabel(ctx, name)
	if err != nil {
		return Hash{}, err
	}
	return SingleRef(name, refs)
}

// Reference kinds, as ParseReference tells them apart.
type RefKind int

const (
	RefPath  RefKind = iota // a file path
	RefHash                 // store:hash:<h>
	RefLabel                // store:<label>
)

// ParseReference splits a Theater reference into its kind and argument.
func ParseReference(ref string) (RefKind, string) {
	if rest, ok := strings.CutPrefix(ref, "store:"); ok {
		if h, ok := strings.CutPrefix(rest, "hash:"); ok {
			return RefHash, h
		}
		return RefLabel, rest
	}
	return RefPath, ref
}
