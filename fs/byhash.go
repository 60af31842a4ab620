package fs

import (
	"context"
	"io"
	"os"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// byHashDir is by-hash/: every blob, by its hash. Nothing in it changes.
type byHashDir struct {
	fixedDir
}

var _ = (fusefs.NodeLookuper)((*byHashDir)(nil))

// Lookup answers from one stat of the blob. A name that is not a hash is
// ENOENT without asking the store.
func (d *byHashDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	h, err := store.ParseHash(name)
	if err != nil {
		return nil, syscall.ENOENT
	}
	return d.fs.blobInode(ctx, &d.Inode, h, out)
}

// blobInode makes (or finds) the inode of a blob, for by-hash/ and chain/.
func (f *fsys) blobInode(ctx context.Context, parent *fusefs.Inode, h store.Hash, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	bi, err := f.st.Stat(ctx, h)
	if err != nil {
		return nil, f.errno("lookup blob", err)
	}
	f.blobAttr(&out.Attr, bi)
	n := &blobNode{fs: f, hash: h}
	setTimeouts(out, blobTimeout)
	return parent.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: blobIno(h)}), 0
}

var _ = (fusefs.NodeReaddirer)((*byHashDir)(nil))

// Readdir lists every blob, sorted.
func (d *byHashDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx = quick(ctx)
	hashes, err := d.fs.st.ListAllContent(ctx)
	if err != nil {
		return nil, d.fs.errno("list blobs", err)
	}
	return &hashStream{hashes: hashes}, 0
}

// hashStream yields directory entries from a sorted list of hashes, one
// name at a time, so the list is the only memory a listing holds.
type hashStream struct {
	hashes []store.Hash
	i      int
}

func (s *hashStream) HasNext() bool { return s.i < len(s.hashes) }
func (s *hashStream) Next() (fuse.DirEntry, syscall.Errno) {
	h := s.hashes[s.i]
	s.i++
	return fuse.DirEntry{Name: h.String(), Mode: syscall.S_IFREG, Ino: blobIno(h)}, 0
}
func (s *hashStream) Close() {}

var _ = (fusefs.NodeGetattrer)((*byHashDir)(nil))

func (d *byHashDir) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = quick(ctx)
	d.fs.dirAttr(&out.Attr, 0o555)
	out.SetTimeout(blobTimeout)
	return 0
}

// blobNode is one blob, read-only. Its content never changes once whole,
// so the kernel keeps its pages across opens; the change feed tells the
// kernel to forget them if Theater rewrites the file in place.
type blobNode struct {
	fusefs.Inode
	fs   *fsys
	hash store.Hash
}

func (f *fsys) blobAttr(a *fuse.Attr, bi store.BlobInfo) {
	f.fileAttr(a, 0o444, bi.Size, bi.ModTime)
}

var _ = (fusefs.NodeGetattrer)((*blobNode)(nil))

// Getattr asks the store each time; the kernel asks only when its
// hour-long cache ran out or was invalidated.
func (n *blobNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = quick(ctx)
	bi, err := n.fs.st.Stat(ctx, n.hash)
	if err != nil {
		return n.fs.errno("stat blob", err)
	}
	n.fs.blobAttr(&out.Attr, bi)
	out.SetTimeout(blobTimeout)
	return 0
}

var _ = (fusefs.NodeOpener)((*blobNode)(nil))

// Open verifies the blob (once in its life) and hands the kernel its open
// file: by passthrough where the kernel can, by pread otherwise.
func (n *blobNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	ctx = quick(ctx)
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, n.fs.refuseChange()
	}
	f, bi, err := n.fs.st.Open(ctx, n.hash)
	if err != nil {
		return nil, 0, n.fs.errno("open blob", err)
	}
	bh := &blobHandle{fs: n.fs, f: f, small: bi.Size < passthroughMin}
	n.fs.opened(bh)
	// Nothing to flush on close: spare the kernel the round trip.
	return bh, fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH, 0
}

var _ = (fusefs.NodeSetattrer)((*blobNode)(nil))

func (n *blobNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.fs.refuseChange()
}

var (
	_ = (fusefs.NodeGetxattrer)((*blobNode)(nil))
	_ = (fusefs.NodeListxattrer)((*blobNode)(nil))
	_ = (fusefs.NodeSetxattrer)((*blobNode)(nil))
	_ = (fusefs.NodeRemovexattrer)((*blobNode)(nil))
)

func (n *blobNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	if attr != xattrHash {
		return 0, syscall.ENODATA
	}
	return xattrReply([]byte(n.hash.String()), dest)
}

func (n *blobNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return xattrReply(xattrNames(xattrHash), dest)
}

func (n *blobNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.fs.refuseChange()
}

func (n *blobNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.fs.refuseChange()
}

// blobHandle is an open, verified blob.
type blobHandle struct {
	fs    *fsys
	f     *os.File
	small bool // below passthroughMin: no passthrough
	once  sync.Once
}

var (
	_ = (fusefs.FileReader)((*blobHandle)(nil))
	_ = (fusefs.FilePassthroughFder)((*blobHandle)(nil))
	_ = (fusefs.FileReleaser)((*blobHandle)(nil))
)

// Read serves reads when passthrough is not in use. It reads into dest:
// a 1 MiB request and its header do not fit a splice pipe.
func (h *blobHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.f.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, h.fs.errno("read blob", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// passthroughMin is the size from which a blob is read by passthrough.
// Setting a backing file up and tearing it down costs two more calls into
// the kernel an open; a small blob is read once into the page cache
// (FOPEN_KEEP_CACHE) and served from there.
const passthroughMin = 256 << 10

// PassthroughFd lets the kernel read the blob file itself (Linux 6.9+,
// with CAP_SYS_ADMIN); go-fuse falls back to Read where it cannot.
func (h *blobHandle) PassthroughFd() (int, bool) { return int(h.f.Fd()), !h.small }

func (h *blobHandle) Release(ctx context.Context) syscall.Errno {
	h.once.Do(func() {
		h.fs.released(h)
		h.f.Close()
	})
	return 0
}
