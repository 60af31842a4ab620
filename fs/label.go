package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

var timeNow = time.Now

// labelNode is a label shown as a file: its content is the content of the
// label's newest ref. Under by-label/ the label is found from the node's
// place in the tree; under actors/ it is fixed and the file read-only.
type labelNode struct {
	fusefs.Inode
	fs       *fsys
	fixed    string // the label, for nodes outside by-label/
	readOnly bool

	mu      sync.Mutex
	writers map[*labelHandle]struct{} // open for writing, for Getattr's size
	// An open node is of one kind at a time, decided by its first open
	// and kept until its last handle is released (see openReader):
	// sealed, a fixed version of the label read by passthrough (or the
	// page cache); or direct, with writers and direct I/O readers. The
	// two never share the node.
	handles     int            // open handles
	sealed      *sealedVersion // the node is sealed at this version
	direct      bool           // the node is direct
	directUntil time.Time      // and is so until then whatever its handles (a writer is on its way)

	// commitMu orders commits through this node against rm of its label.
	// Lock order: commitMu, then mu, then a handle's mu.
	commitMu sync.Mutex
}

func (n *labelNode) label() (string, bool) {
	if n.fixed != "" {
		return n.fixed, true
	}
	return labelName(&n.Inode)
}

func (n *labelNode) perm() uint32 {
	if n.readOnly {
		return 0o444
	}
	return 0o644
}

// attrFrom fills attributes from a label's refs: the newest ref's size, the
// label file's mtime. A label whose blob is missing still lists (size 0);
// reading it fails.
func (n *labelNode) attrFrom(ctx context.Context, li store.LabelInfo, a *fuse.Attr) {
	var size int64
	if h, ok := li.Head(); ok {
		if bi, err := n.fs.st.Stat(ctx, h); err == nil {
			size = bi.Size
		}
	}
	n.fs.fileAttr(a, n.perm(), size, li.ModTime)
}

var _ = (fusefs.NodeGetattrer)((*labelNode)(nil))

// Getattr shows the committed label to everyone but the writers: a
// process with the label open for writing sees the size of its own
// uncommitted version. The kernel must ask each time (attribute timeout 0),
// or it would show one process's answer to all.
func (n *labelNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	ctx = quick(ctx)
	out.SetTimeout(0)
	if v := n.sealedAs(); v != nil {
		n.fs.fileAttr(&out.Attr, n.perm(), v.size, v.mtime)
		return 0
	}
	if h := n.writerOf(ctx); h != nil {
		n.fs.fileAttr(&out.Attr, n.perm(), h.size(), timeNow())
		return 0
	}
	name, ok := n.label()
	if !ok {
		return syscall.ENOENT
	}
	li, pending, err := n.statLabel(ctx, name)
	if pending {
		// Created and not closed yet: nothing is committed.
		n.fs.fileAttr(&out.Attr, n.perm(), 0, timeNow())
		return 0
	}
	if err != nil {
		return n.fs.errno("stat label", err)
	}
	n.attrFrom(ctx, li, &out.Attr)
	return 0
}

// writerOf returns an uncommitted writer opened by the process asking.
// The file handle is no guide: the kernel sends none with a getattr, and
// go-fuse then passes the node's first open handle, whoever opened it.
func (n *labelNode) writerOf(ctx context.Context) *labelHandle {
	w := n.pendingWriter()
	if w == nil {
		return nil
	}
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return nil
	}
	tgid := processOf(caller.Pid)
	n.mu.Lock()
	defer n.mu.Unlock()
	for h := range n.writers {
		if h.tgid == tgid && h.pending() {
			return h
		}
	}
	return nil
}

// processOf maps a thread id (what FUSE reports) to its process id, so
// every thread of a writer sees its writes.
func processOf(tid uint32) uint32 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", tid))
	if err != nil {
		return tid
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Tgid:"); ok {
			if id, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32); err == nil {
				return uint32(id)
			}
		}
	}
	return tid
}

// statLabel is StatLabel as this node sees it: a label that one of its
// writers is creating is pending, not missing, also while that writer is
// committing it this very moment.
func (n *labelNode) statLabel(ctx context.Context, name string) (li store.LabelInfo, pending bool, err error) {
	li, err = n.fs.st.StatLabel(ctx, name)
	if !errors.Is(err, store.ErrNotFound) || !n.hasWriters() {
		return li, false, err
	}
	n.commitMu.Lock() // wait out a commit under way
	n.commitMu.Unlock()
	li, err = n.fs.st.StatLabel(ctx, name)
	if errors.Is(err, store.ErrNotFound) && n.hasWriters() {
		return store.LabelInfo{}, true, nil
	}
	return li, false, err
}

func (n *labelNode) hasWriters() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.writers) > 0
}

// pendingWriter returns a handle whose content has not been committed yet,
// if there is one.
func (n *labelNode) pendingWriter() *labelHandle {
	n.mu.Lock()
	defer n.mu.Unlock()
	for h := range n.writers {
		if h.pending() {
			return h
		}
	}
	return nil
}

var _ = (fusefs.NodeOpener)((*labelNode)(nil))

func (n *labelNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	ctx = quick(ctx)
	writing := flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC) != 0
	if writing {
		if n.fs.readOnly {
			return nil, 0, syscall.EROFS
		}
		if n.readOnly {
			return nil, 0, syscall.EACCES
		}
	}
	name, ok := n.label()
	if !ok && !writing {
		// Removed between the path walk and this open. A reader finds
		// it gone, as it would a file removed a moment earlier.
		return nil, 0, syscall.ENOENT
	}
	if !ok {
		if !n.fs.staleAgain(ctx) {
			// ESTALE makes the kernel walk the path again (once), so an
			// open with O_CREAT creates the label anew rather than
			// failing.
			return nil, 0, syscall.ESTALE
		}
		// The kernel's second walk met a label removed again (labels
		// removed and made by others as fast as it walks): the open
		// succeeds as an open racing an unlink does, on the removed
		// file, and what is written through it goes nowhere.
		h, en := n.openWriter(ctx, nil, true)
		if en != 0 {
			return nil, 0, en
		}
		h.mu.Lock()
		h.removed = true
		h.mu.Unlock()
		return h, fuse.FOPEN_DIRECT_IO, 0
	}
	li, _, err := n.statLabel(ctx, name)
	if errors.Is(err, store.ErrNotFound) && writing {
		// A new label whose creator has not closed it has no content
		// yet, and another writer may start one too. A label removed
		// between the lookup and this open (open with O_CREAT racing an
		// rm) is written anew.
		err = nil
	}
	if err != nil {
		return nil, 0, n.fs.errno("open label", err)
	}
	head, hasHead := li.Head()
	var base *os.File
	var baseSize int64
	truncate := flags&syscall.O_TRUNC != 0
	if err := li.Corrupt(name); err != nil && !writing {
		// Lines but no ref: no content to show, as for a label whose
		// blob is missing. A writer starts from nothing, and repairs it.
		n.fs.log.Error("label holds no ref", "label", name, "err", err)
		return nil, 0, syscall.EIO
	}
	if hasHead && !truncate {
		f, bi, err := n.fs.st.Open(ctx, head)
		if err != nil {
			n.fs.log.Error("label points to a blob that cannot be read", "label", name, "hash", head.String(), "err", err)
			if errors.Is(err, store.ErrNotFound) {
				return nil, 0, syscall.EIO
			}
			return nil, 0, n.fs.errno("open label", err)
		}
		base, baseSize = f, bi.Size
	}
	if !writing {
		h, flags, en := n.openReader(ctx, head, li.ModTime, base, baseSize)
		if en != 0 && base != nil {
			base.Close()
		}
		return h, flags, en
	}
	fh, en := n.openWriter(ctx, base, truncate)
	if fh != nil {
		fh.append = flags&syscall.O_APPEND != 0
	}
	return fh, fuse.FOPEN_DIRECT_IO, en
}

// openWriter makes a handle that writes a new version of the label. With
// fresh, it starts empty (create, O_TRUNC); otherwise from base.
func (n *labelNode) openWriter(ctx context.Context, base *os.File, fresh bool) (*labelHandle, syscall.Errno) {
	h := &labelHandle{node: n, base: base, writable: true}
	if caller, ok := fuse.FromContext(ctx); ok {
		h.tgid = processOf(caller.Pid)
	}
	var sp store.Draft
	if fresh {
		var err error
		if sp, err = n.fs.st.NewDraft(); err != nil {
			if base != nil {
				base.Close()
			}
			return nil, n.fs.errno("spool", err)
		}
		h.spool, h.dirty = sp, true
	}
	// A sealed node takes no writer: ESTALE makes the kernel walk the
	// path again, and the lookup puts a direct node under the name.
	n.mu.Lock()
	if n.sealed != nil {
		n.mu.Unlock()
		if sp != nil {
			sp.Discard()
		}
		if base != nil {
			base.Close()
		}
		if name, ok := n.label(); ok {
			n.fs.writerComing(name)
		}
		return nil, syscall.ESTALE
	}
	n.direct = true
	n.handles++
	if n.writers == nil {
		n.writers = map[*labelHandle]struct{}{}
	}
	n.writers[h] = struct{}{}
	n.mu.Unlock()
	n.fs.opened(h)
	return h, 0
}

// sealedVersion is the version of the label a sealed node shows.
type sealedVersion struct {
	head  store.Hash
	size  int64
	mtime time.Time
}

func (n *labelNode) sealedAs() *sealedVersion {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sealed
}

// openReader opens a label for reading, at the version head (in base, of
// size bytes).
//
// A large label is read at the speed of by-hash/: by FUSE passthrough to
// its blob where the kernel allows it, else through the page cache. The
// kernel lets no other kind of open share an inode with a passthrough
// file (nor does go-fuse keep count of backing files right if they do),
// and a page cache shared with writers would mix versions. So a node
// opened this way is sealed: it shows this version of the label and
// takes only readers of it until its last handle is released. A writer
// meanwhile gets ESTALE, and the kernel's second path walk finds the node
// the lookup put under the name, kept direct for it. A node that is direct
// (writers or direct readers open, or a writer on its way) gives direct
// I/O to every reader, and is never sealed while a handle is open.
func (n *labelNode) openReader(ctx context.Context, head store.Hash, mtime time.Time, base *os.File, size int64) (fusefs.FileHandle, uint32, syscall.Errno) {
	large := base != nil && size >= passthroughMin && n.fixed == "" && n.writerOf(ctx) == nil
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.sealed != nil && (!large || n.sealed.head != head):
		// Sealed at a version no longer the label's.
		return nil, 0, syscall.ESTALE
	case n.sealed == nil && (n.direct || !large || time.Now().Before(n.directUntil)):
		n.direct = true
		n.handles++
		h := &labelHandle{node: n, base: base}
		n.fs.opened(h)
		return h, fuse.FOPEN_DIRECT_IO, 0
	case n.sealed == nil:
		n.sealed = &sealedVersion{head: head, size: size, mtime: mtime}
	}
	n.handles++
	h := &labelHandle{node: n, base: base, sealed: true}
	n.fs.opened(h)
	// The content of a sealed node never changes: its pages may stay.
	return h, fuse.FOPEN_KEEP_CACHE, 0
}

// keepDirect keeps the node direct until then (see openReader).
func (n *labelNode) keepDirect(until time.Time) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if until.After(n.directUntil) {
		n.directUntil = until
	}
}

// handleGone notes a handle released: the node's kind is free again once
// none is open.
func (n *labelNode) handleGone() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.handles--; n.handles == 0 {
		n.sealed, n.direct = nil, false
	}
}

var _ = (fusefs.NodeSetattrer)((*labelNode)(nil))

// Setattr truncates (through the handle, or as a change of its own for
// truncate(1)); mode, owner and times are accepted and not stored, so
// touch, cp -p, rsync -a and sed -i work.
func (n *labelNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	ctx = quick(ctx)
	if n.fs.readOnly {
		return syscall.EROFS
	}
	if size, ok := in.GetSize(); ok {
		if n.readOnly {
			return syscall.EACCES
		}
		h, isHandle := fh.(*labelHandle)
		if !isHandle || !h.writable {
			en := n.truncateLabel(ctx, int64(size))
			if en != 0 {
				return en
			}
		} else if en := h.truncate(int64(size)); en != 0 {
			return en
		}
	}
	return n.Getattr(ctx, fh, out)
}

// truncateLabel is truncate(2) on a path: one new version of the label.
func (n *labelNode) truncateLabel(ctx context.Context, size int64) syscall.Errno {
	h, _, en := n.Open(ctx, syscall.O_WRONLY)
	if en != 0 {
		return en
	}
	lh := h.(*labelHandle)
	defer lh.Release(ctx)
	if en := lh.truncate(size); en != 0 {
		return en
	}
	return lh.Flush(ctx)
}

var (
	_ = (fusefs.NodeGetxattrer)((*labelNode)(nil))
	_ = (fusefs.NodeListxattrer)((*labelNode)(nil))
	_ = (fusefs.NodeSetxattrer)((*labelNode)(nil))
	_ = (fusefs.NodeRemovexattrer)((*labelNode)(nil))
)

func (n *labelNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	ctx = quick(ctx)
	if attr != xattrHash && attr != xattrRefs {
		return 0, syscall.ENODATA
	}
	if v := n.sealedAs(); v != nil && attr == xattrHash {
		return xattrReply([]byte(v.head.String()), dest) // the version its readers read
	}
	name, ok := n.label()
	if !ok {
		return 0, syscall.ENOENT
	}
	li, err := n.fs.st.StatLabel(ctx, name)
	if err != nil {
		return 0, n.fs.errno("getxattr", err)
	}
	if attr == xattrRefs {
		return xattrReply(refsValue(li.Refs), dest)
	}
	head, ok := li.Head()
	if !ok {
		return 0, syscall.ENODATA
	}
	return xattrReply([]byte(head.String()), dest)
}

func (n *labelNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	ctx = quick(ctx)
	return xattrReply(xattrNames(xattrHash, xattrRefs), dest)
}

func (n *labelNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.fs.noXattrs()
}

func (n *labelNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.fs.noXattrs()
}

// labelHandle is an open label. Reads come from the blob the label named
// when it was opened. Writes go to a spool, made on the first change as a
// copy of that blob (O_APPEND, pwrite and truncate change a copy of the
// current content); flush or fsync commits the spool as the label's one
// ref, atomically. Each commit is one whole replacement: the last wins.
type labelHandle struct {
	node     *labelNode
	writable bool
	sealed   bool   // a reader of a sealed node: by passthrough where possible
	append   bool   // O_APPEND: every write goes at the end of this handle's copy
	tgid     uint32 // the process that opened it for writing

	mu    sync.Mutex
	base  *os.File    // the content this handle started from; nil for none
	spool store.Draft // the new content, once it differs
	dirty bool        // spool holds content not committed yet
	wrote bool        // written or truncated since opened or committed

	// flushed: close(2) was called on it at least once. A handle the
	// kernel releases without a flush was never really opened (the open
	// failed after the server answered it): nothing of it is committed.
	flushed bool

	// failed is the errno of a write or truncate that failed (a full
	// disk): the handle's new version is lost, nothing more is committed
	// through it, and flush and fsync report it.
	failed syscall.Errno

	// removed: the label was removed (rm) before this handle committed
	// anything; like an unlinked file's, its content goes nowhere.
	removed bool
}

func (h *labelHandle) pending() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dirty
}

func (h *labelHandle) size() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.spool != nil {
		return h.spool.Size()
	}
	return 0
}

var (
	_ = (fusefs.FileReader)((*labelHandle)(nil))
	_ = (fusefs.FilePassthroughFder)((*labelHandle)(nil))
	_ = (fusefs.FileWriter)((*labelHandle)(nil))
	_ = (fusefs.FileFlusher)((*labelHandle)(nil))
	_ = (fusefs.FileFsyncer)((*labelHandle)(nil))
	_ = (fusefs.FileReleaser)((*labelHandle)(nil))
)

// PassthroughFd hands the kernel the blob of a sealed node's version.
func (h *labelHandle) PassthroughFd() (int, bool) {
	if !h.sealed {
		return 0, false
	}
	return int(h.base.Fd()), true
}

func (h *labelHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var r io.ReaderAt
	switch {
	case h.spool != nil:
		r = h.spool
	case h.base != nil:
		r = h.base // the version opened (a sealed one without passthrough too)
	default:
		return fuse.ReadResultData(nil), 0
	}
	n, err := r.ReadAt(dest, off)
	if err != nil && err != io.EOF {
		return nil, h.node.fs.errno("read label", err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// ensureSpool starts the new version: a spool holding a copy of the first
// keep bytes of the current content.
func (h *labelHandle) ensureSpool(keep int64) syscall.Errno {
	if h.spool != nil {
		return 0
	}
	sp, err := h.node.fs.st.NewDraft()
	if err != nil {
		return h.node.fs.errno("spool", err)
	}
	if h.base != nil && keep > 0 {
		if _, err := sp.ReadFrom(io.NewSectionReader(h.base, 0, keep)); err != nil {
			sp.Discard()
			return h.node.fs.errno("copy label content", err)
		}
	}
	h.spool = sp
	return 0
}

func (h *labelHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if !h.writable {
		return 0, syscall.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != 0 {
		return 0, h.failed
	}
	if en := h.ensureSpool(1 << 62); en != 0 {
		return 0, en
	}
	if h.append {
		// The kernel's offset comes from the inode's size, which other
		// handles' versions change; this handle appends to its own copy.
		off = h.spool.Size()
	}
	n, err := h.spool.WriteAt(data, off)
	if err != nil {
		// The spool refuses to commit after a failed write: drop it, so
		// the label keeps what it had (and the close reports the error).
		h.failed = h.node.fs.errno("write label", err)
		h.spool.Discard()
		h.spool, h.dirty = nil, false
		return uint32(n), h.failed
	}
	h.dirty, h.wrote = true, true
	return uint32(n), 0
}

func (h *labelHandle) truncate(size int64) syscall.Errno {
	h.mu.Lock()
	defer h.mu.Unlock()
	if en := h.ensureSpool(size); en != 0 {
		return en
	}
	if err := h.spool.Truncate(size); err != nil {
		h.failed = h.node.fs.errno("truncate label", err)
		h.spool.Discard()
		h.spool, h.dirty = nil, false
		return h.failed
	}
	h.dirty, h.wrote = true, true
	return 0
}

// Flush commits on close (and on every close of a dup'd descriptor). One
// exception: a handle that is empty because it was just created or opened
// with O_TRUNC, and not written yet. Shells open, dup2 and close the first
// descriptor before writing (`echo new > label`): committing then would
// publish an empty version nobody wrote. Its commit waits for a write,
// fsync or Release (so `touch new` and `: > label` commit on release).
func (h *labelHandle) Flush(ctx context.Context) syscall.Errno {
	ctx = quick(ctx)
	h.mu.Lock()
	h.flushed = true
	onlyTruncated := h.dirty && !h.wrote
	h.mu.Unlock()
	if onlyTruncated {
		return 0
	}
	return h.commit(ctx)
}

// Fsync commits: the content is durable when it returns.
func (h *labelHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return h.commit(quick(ctx))
}

func (h *labelHandle) commit(ctx context.Context) syscall.Errno {
	// One commit or rm of the node's label at a time: an rm either sees
	// the committed label and removes it, or marks this handle removed
	// before it commits.
	h.node.commitMu.Lock()
	defer h.node.commitMu.Unlock()
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.failed != 0 {
		return h.failed
	}
	if !h.dirty {
		return 0
	}
	name, ok := h.node.label()
	if !ok || h.removed {
		// Removed while open: like an unlinked file, the content goes
		// nowhere.
		h.spool.Discard()
		h.spool, h.dirty = nil, false
		return 0
	}
	sp := h.spool
	h.spool, h.dirty, h.wrote = nil, false, false
	sum, err := sp.Commit(ctx, name, store.LabelReplace)
	if err != nil {
		return h.node.fs.errno("commit label", err)
	}
	// Later reads and writes on this handle start from what was committed.
	f, _, err := h.node.fs.st.Open(ctx, sum)
	if err != nil {
		return h.node.fs.errno("reopen label", err)
	}
	if h.base != nil {
		h.base.Close()
	}
	h.base = f
	return 0
}

// Release ends the handle. A truncation that no close committed (`: >
// label`, `open(O_TRUNC)` and close) is committed now.
func (h *labelHandle) Release(ctx context.Context) syscall.Errno {
	h.node.fs.released(h)
	h.mu.Lock()
	commit := h.dirty && h.flushed
	h.mu.Unlock()
	if commit {
		// Still among the node's writers while it commits, so that an rm
		// racing this release finds it (see labelDir.Unlink).
		if en := h.commit(context.Background()); en != 0 {
			name, _ := h.node.label()
			h.node.fs.log.Error("could not commit a truncated label on release", "label", name, "errno", en)
		}
	}
	// The node's lock never under the handle's: pendingWriter takes them
	// in that order.
	if h.writable {
		h.node.mu.Lock()
		delete(h.node.writers, h)
		h.node.mu.Unlock()
	}
	h.mu.Lock()
	if h.spool != nil {
		h.spool.Discard()
		h.spool = nil
	}
	h.dirty = false
	if h.base != nil {
		h.base.Close()
		h.base = nil
	}
	h.mu.Unlock()
	h.node.handleGone()
	return 0
}

// forgetWriters marks the node's open writers as removed: an rm of a label
// that is still being created (nothing committed yet) must not come back
// when its writer closes.
func (n *labelNode) forgetWriters() {
	n.mu.Lock()
	hs := make([]*labelHandle, 0, len(n.writers))
	for h := range n.writers {
		hs = append(hs, h)
	}
	n.mu.Unlock()
	for _, h := range hs {
		h.mu.Lock()
		h.removed = true
		h.mu.Unlock()
	}
}
