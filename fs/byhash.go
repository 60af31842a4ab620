package fs

import (
	"context"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// byHashDir is by-hash/: every blob, by its hash. Nothing in it changes.
type byHashDir struct {
	fixedDir
	leaves leafQueue
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
	ch, errno := d.fs.blobInode(ctx, &d.Inode, h, out)
	if errno == 0 {
		d.leaves.push(h)
	}
	return ch, errno
}

// leafLimit is how many blob inodes by-hash/ lets the kernel hold. The
// server keeps a node (about 1 KiB) for each inode the kernel holds, and
// the kernel holds one for every entry it has seen, which ls -l of a
// large by-hash/ makes the whole store: beyond the limit, the oldest
// entries are invalidated, the kernel forgets them, and so does go-fuse.
const leafLimit = 100_000

// leafQueue is the blobs by-hash/ gave the kernel an entry for, oldest
// first, each once: tens of bytes each, not a node's kilobyte. Every
// lookup queues its blob unless it is queued already, also one whose node
// go-fuse still has: the kernel may hold a fresh entry for a node kept
// alive by an open file, or not yet forgotten.
type leafQueue struct {
	mu     sync.Mutex
	q      []store.Hash // q[head:] are queued
	head   int
	queued map[store.Hash]struct{}
	limit  int
	wake   chan struct{} // tells trim that the queue is over the limit
}

func newLeafQueue(limit int) leafQueue {
	return leafQueue{limit: limit, queued: map[store.Hash]struct{}{}, wake: make(chan struct{}, 1)}
}

// full reports whether the queue is over its limit by more than a tenth,
// the invalidations falling behind.
func (lq *leafQueue) full() bool {
	lq.mu.Lock()
	defer lq.mu.Unlock()
	return len(lq.q)-lq.head > lq.limit+lq.limit/10
}

func (lq *leafQueue) setLimit(n int) {
	lq.mu.Lock()
	lq.limit = n
	lq.mu.Unlock()
}

func (lq *leafQueue) push(h store.Hash) {
	lq.mu.Lock()
	if _, ok := lq.queued[h]; ok {
		lq.mu.Unlock()
		return
	}
	lq.queued[h] = struct{}{}
	lq.q = append(lq.q, h)
	over := len(lq.q)-lq.head > lq.limit
	lq.mu.Unlock()
	if over {
		select {
		case lq.wake <- struct{}{}:
		default:
		}
	}
}

// pop takes the oldest blob while the queue is over the limit.
func (lq *leafQueue) pop() (store.Hash, bool) {
	lq.mu.Lock()
	defer lq.mu.Unlock()
	if len(lq.q)-lq.head <= lq.limit {
		return store.Hash{}, false
	}
	h := lq.q[lq.head]
	delete(lq.queued, h)
	if lq.head++; lq.head > 1024 && lq.head > len(lq.q)/2 {
		lq.q = append(lq.q[:0], lq.q[lq.head:]...)
		lq.head = 0
	}
	return h, true
}

// trim invalidates the oldest entries of by-hash/ while more than
// leafLimit are held, until stop is closed. It runs on its own goroutine:
// the kernel answers an invalidation only when no readdir holds the
// directory.
func (d *byHashDir) trim(stop <-chan struct{}) {
	for {
		select {
		case <-d.leaves.wake:
		case <-stop:
			return
		}
		for {
			h, ok := d.leaves.pop()
			if !ok {
				break
			}
			d.NotifyEntry(h.String())
		}
	}
}

// blobInode makes (or finds) the inode of a blob, for by-hash/ and chain/.
func (f *fsys) blobInode(ctx context.Context, parent *fusefs.Inode, h store.Hash, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	bi, err := f.st.Stat(ctx, h)
	if err != nil {
		return nil, f.errno("lookup blob", err)
	}
	f.blobAttr(&out.Attr, bi)
	setTimeouts(out, blobTimeout)
	n := &blobNode{fs: f, hash: h}
	n.size.Store(bi.Size)
	// go-fuse keeps the node this blob already has, if any, in place of
	// the new one; its size was set the same way.
	return parent.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: blobIno(h)}), 0
}

var _ = (fusefs.NodeOpendirHandler)((*byHashDir)(nil))

// OpendirHandle gives each listing a handle of its own, so that the
// lookups of readdirplus come to it rather than to Lookup.
func (d *byHashDir) OpendirHandle(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	return &hashDirHandle{d: d}, 0, 0
}

// hashDirHandle is an open by-hash/: the sorted list of hashes, made at
// the first read, and the next entry's index. The list is the only memory
// a listing holds.
type hashDirHandle struct {
	d      *byHashDir
	hashes []store.Hash
	listed bool
	i      int
}

var (
	_ = (fusefs.FileReaddirenter)((*hashDirHandle)(nil))
	_ = (fusefs.FileSeekdirer)((*hashDirHandle)(nil))
	_ = (fusefs.FileLookuper)((*hashDirHandle)(nil))
)

func (h *hashDirHandle) list(ctx context.Context) syscall.Errno {
	if !h.listed {
		hashes, err := h.d.fs.st.ListAllContent(quick(ctx))
		if err != nil {
			return h.d.fs.errno("list blobs", err)
		}
		h.hashes, h.listed, h.i = hashes, true, 0
	}
	return 0
}

func (h *hashDirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	if errno := h.list(ctx); errno != 0 {
		return nil, errno
	}
	if h.i >= len(h.hashes) {
		return nil, 0
	}
	hash := h.hashes[h.i]
	h.i++
	return &fuse.DirEntry{Name: hash.String(), Mode: syscall.S_IFREG, Ino: blobIno(hash)}, 0
}

// Lookup answers readdirplus for one entry: with its inode, unless
// by-hash/ holds more than it should because the invalidations have fallen
// behind (they wait for the directory, which each listing call holds).
// Then the entry goes without attributes: the kernel lists it, and looks
// it up when asked.
func (h *hashDirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	if h.d.leaves.full() && h.d.GetChild(name) == nil {
		return nil, syscall.EAGAIN
	}
	return h.d.Lookup(ctx, name, out)
}

// Seekdir goes back to an offset handed out earlier (telldir, rewinddir):
// the n-th entry of the sorted listing is entry n, as go-fuse numbers them.
// Offset 0 lists the directory afresh.
func (h *hashDirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	if off == 0 {
		h.listed = false
	}
	if errno := h.list(ctx); errno != 0 {
		return errno
	}
	h.i = int(min(off, uint64(len(h.hashes))))
	return 0
}

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
	size atomic.Int64 // as last stat'ed: picks how Open serves it
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
	n.size.Store(bi.Size)
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
	// Nothing to flush on close: spare the kernel the round trip.
	const keep = fuse.FOPEN_KEEP_CACHE | fuse.FOPEN_NOFLUSH
	if size := n.size.Load(); size > 0 && size < passthroughMin {
		// A small blob is read once into the page cache and served from
		// there: its file is opened (and verified, once in its life) by
		// the first read that misses the cache, so a cat of a cached blob
		// costs the server no open and no close. An empty one is never
		// read, so it is verified here: a blob cut to nothing by a crash
		// must not pass for empty content.
		return &blobHandle{fs: n.fs, hash: n.hash, small: true}, keep, 0
	}
	bh := &blobHandle{fs: n.fs, hash: n.hash}
	if errno := bh.open(ctx); errno != 0 {
		return nil, 0, errno
	}
	return bh, keep, 0
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

// blobHandle is an open blob. Its file, once open, is verified.
type blobHandle struct {
	fs    *fsys
	hash  store.Hash
	small bool // below passthroughMin: no passthrough, file opened on the first read

	mu     sync.Mutex
	f      *os.File // nil until opened
	closed bool
}

var (
	_ = (fusefs.FileReader)((*blobHandle)(nil))
	_ = (fusefs.FilePassthroughFder)((*blobHandle)(nil))
	_ = (fusefs.FileReleaser)((*blobHandle)(nil))
)

// open opens and verifies the blob's file, unless it is open already.
func (h *blobHandle) open(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.closed:
		return syscall.EBADF
	case h.f != nil:
		return 0
	}
	f, _, err := h.fs.st.Open(ctx, h.hash)
	if err != nil {
		return h.fs.errno("open blob", err)
	}
	h.f = f
	h.fs.opened(h)
	return 0
}

// Read serves reads when passthrough is not in use, opening the blob's
// file on the first.
func (h *blobHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if errno := h.open(quick(ctx)); errno != 0 {
		if errno == syscall.ENOENT {
			// Removed (by gc) since it was opened: read(2) has no
			// "no such file"; the file is gone under the reader.
			errno = syscall.EIO
		}
		return nil, errno
	}
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
func (h *blobHandle) PassthroughFd() (int, bool) {
	if h.small {
		return 0, false
	}
	return int(h.f.Fd()), true
}

func (h *blobHandle) Release(ctx context.Context) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f != nil && !h.closed {
		h.fs.released(h)
		h.f.Close()
	}
	h.closed = true
	return 0
}
