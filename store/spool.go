package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Spool is content on its way into the store: a temp file in tmp/ that is
// hashed as it is written. Sequential writes are hashed as they arrive;
// writes at other offsets and truncation are allowed (a file being edited
// through the mount needs them) and make Commit hash the file once more.
//
// A Spool is used by one goroutine at a time. Commit consumes it; Discard
// releases it without storing anything. Calling Discard after Commit is a
// no-op, so `defer sp.Discard()` is the idiom.
type Spool struct {
	s      *Store
	f      *os.File
	name   string // file name inside tmp/
	seq    uint64 // its place among the store's spools, in order made
	h      *Hasher
	hashed int64 // bytes hashed in order so far
	size   int64
	dirty  bool // written out of order: rehash at commit
	done   bool
	pipe   *writePipe // writing and hashing large writes beside the writer
	err    error      // the first write or truncate error: nothing commits after one
}

// NewSpool starts a new spool in tmp/, in a file made ahead if one is
// ready. No request goes to the owner: tmp/ belongs to whoever creates a
// file in it.
func (s *Store) NewSpool() (*Spool, error) {
	if s.opts.ReadOnly {
		return nil, &Error{Op: "store", Err: errReadOnly}
	}
	r, err := s.takeSpoolFile()
	if err != nil {
		select {
		case <-s.quit: // the store's directories are closed, or closing
			return nil, &Error{Op: "store", Err: ErrClosed}
		default:
		}
		return nil, &Error{Op: "store", Name: "tmp/", Err: err}
	}
	return &Spool{s: s, f: r.f, name: r.name, seq: r.seq, h: NewHasher()}, nil
}

var errReadOnly = fmt.Errorf("read-only store: %w", os.ErrPermission)

// createTemp creates a fresh file in tmp/ and holds an flock on it for as
// long as it is open, which tells Open in another process that it is live.
func (s *Store) createTemp(prefix string) (string, *os.File, error) {
	var rnd [12]byte
	for range 10 {
		rand.Read(rnd[:])
		name := prefix + hex.EncodeToString(rnd[:])
		var fd int
		err := s.inTmp(func(dir int) (err error) {
			fd, err = unix.Openat(dir, name, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o644)
			return err
		})
		if errors.Is(err, unix.EEXIST) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		f := os.NewFile(uintptr(fd), filepath.Join(s.dir, TmpDir, name))
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			s.removeTemp(name)
			return "", nil, fmt.Errorf("locking temp file: %w", err)
		}
		return name, f, nil
	}
	return "", nil, errors.New("cannot create a temp file name")
}

// removeTemp removes a file of tmp/, if it is still there.
func (s *Store) removeTemp(name string) {
	s.inTmp(func(dir int) error { return unix.Unlinkat(dir, name, 0) })
}

// inTmp runs fn with the descriptor of tmp/, held so that a concurrent
// Close cannot close it (and the number be reused) under fn; after Close
// it fails.
func (s *Store) inTmp(fn func(dir int) error) error { return inDir(s.tmpDir, fn) }

// inDir runs fn with d's descriptor, held as inTmp says.
func inDir(d *os.File, fn func(dir int) error) error {
	rc, err := d.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

// Write appends p.
func (sp *Spool) Write(p []byte) (int, error) { return sp.WriteAt(p, sp.size) }

// WriteAt writes p at off. Large writes in order go through a pipeline:
// the bytes are copied, and written to the spool file and hashed by two
// goroutines while the caller goes on, so a file copied through the mount
// runs at the speed of the slower of the disk and the hash, not of both in
// turn. A write error from the pipeline surfaces at the next call (or at
// Commit, which refuses the spool). Any other write waits for the pipeline
// first.
func (sp *Spool) WriteAt(p []byte, off int64) (int, error) {
	if sp.done {
		return 0, os.ErrClosed
	}
	if sp.err != nil {
		return 0, sp.err
	}
	if !sp.dirty && off == sp.hashed && (sp.pipe != nil || len(p) >= pipeMin) {
		if sp.pipe == nil {
			sp.pipe = newWritePipe(sp.f, sp.h)
		}
		if err := sp.pipe.write(p, off); err != nil {
			sp.err = err
			sp.stopPipe()
			return 0, err
		}
		sp.hashed += int64(len(p))
		if end := off + int64(len(p)); end > sp.size {
			sp.size = end
		}
		return len(p), nil
	}
	if err := sp.stopPipe(); err != nil {
		return 0, err
	}
	n, err := sp.f.WriteAt(p, off)
	if err != nil {
		// A short write (a full disk) leaves the file's length unknown to
		// us: the spool is spoiled, and Commit refuses it.
		sp.err = err
		return n, err
	}
	if !sp.dirty && off == sp.hashed {
		sp.h.Write(p[:n])
		sp.hashed += int64(n)
	} else if n > 0 {
		sp.dirty = true
	}
	if end := off + int64(n); end > sp.size {
		sp.size = end
	}
	return n, err
}

// copyBufs recycles ReadFrom's buffers: a small Put must not cost a
// megabyte of garbage.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// ReadFrom appends everything r yields, hashing it on the way.
func (sp *Spool) ReadFrom(r io.Reader) (int64, error) { return WriteFrom(sp, r) }

// WriteFrom writes everything r yields to w, a megabyte at a time through a
// pooled buffer, and returns how much: the ReadFrom of a spool or draft,
// where io.Copy would call that ReadFrom again.
func WriteFrom(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
			total += int64(n)
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// ReadAt reads the spooled content, for a file being edited.
func (sp *Spool) ReadAt(p []byte, off int64) (int, error) {
	if err := sp.stopPipe(); err != nil {
		return 0, err
	}
	return sp.f.ReadAt(p, off)
}

// Truncate sets the spool's size.
func (sp *Spool) Truncate(size int64) error {
	if sp.done {
		return os.ErrClosed
	}
	if err := sp.stopPipe(); err != nil {
		return err
	}
	if err := sp.f.Truncate(size); err != nil {
		sp.err = err
		return err
	}
	if size != sp.hashed {
		sp.dirty = true
	}
	sp.size = size
	return nil
}

// Size is the spooled content's length.
func (sp *Spool) Size() int64 { return sp.size }

// File returns the spool's open file, for reading its bytes (a passthrough
// or copy), once every write has reached it. Writes must go through the
// Spool.
func (sp *Spool) File() *os.File {
	sp.stopPipe()
	return sp.f
}

// selfSyncSize is the spool size from which the writer fsyncs its own
// spool rather than leave it to the owner's batch sync.
const selfSyncSize = 1 << 20

// LabelMode says what Commit does to a label after storing the content.
type LabelMode int

const (
	// LabelNone stores the content only.
	LabelNone LabelMode = iota
	// LabelAppend appends the ref to the label (PutAtLabel).
	LabelAppend
	// LabelReplace makes the label hold exactly this ref
	// (ReplaceContentAtLabel).
	LabelReplace
)

// Commit stores the spooled content durably, points the label at it as mode
// says, and returns its hash. Content that already exists is not rewritten.
// The spool is consumed, successful or not. ctx can stop the commit until
// it is handed over for its flush (or to the owner); after that the commit
// goes through, and its true outcome is returned.
func (sp *Spool) Commit(ctx context.Context, label string, mode LabelMode) (Hash, error) {
	if sp.done {
		return Hash{}, os.ErrClosed
	}
	defer sp.Discard()
	if mode != LabelNone {
		if err := ValidateLabel(label); err != nil {
			return Hash{}, err
		}
	}
	sp.stopPipe()
	if sp.err != nil {
		return Hash{}, &Error{Op: "store", Err: fmt.Errorf("content was not written whole: %w", sp.err)}
	}
	if fi, err := sp.f.Stat(); err != nil || fi.Size() != sp.size {
		return Hash{}, &Error{Op: "store", Err: fmt.Errorf("spool file is not the length written (%d bytes): %v", sp.size, err)}
	}
	if sp.dirty {
		sp.h.Reset()
		buf := hashBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(sp.h, io.NewSectionReader(sp.f, 0, sp.size), *buf)
		hashBufs.Put(buf)
		if err != nil {
			return Hash{}, &Error{Op: "store", Err: fmt.Errorf("rereading spool: %w", err)}
		}
	}
	sum, err := sp.h.Sum()
	if err != nil {
		return sum, &Error{Op: "store", Name: sum.String(), Err: err}
	}
	if err := sp.s.verifyExisting(ctx, sum); err != nil {
		return sum, err
	}
	c := &commit{
		tmp: sp.name, f: sp.f, sum: sum, size: sp.size,
		label: label, mode: mode, seq: sp.seq,
		reply: make(chan commitResult, 1),
	}
	switch err := sp.sync(ctx, c); {
	case err == nil:
	case errors.Is(err, ErrClosed), errors.Is(err, ctx.Err()):
		return sum, err
	default:
		return sum, &Error{Op: "store", Name: sum.String(), Err: err}
	}
	if !c.back {
		if err := sp.s.send(ctx, request{ctx: ctx, commit: c}); err != nil {
			return sum, err
		}
	}
	// Wait for the owner even if ctx ends: the rename may be under way,
	// and the spool file must stay locked until it is done. If the owner
	// has exited (Close) without taking the commit, it never will.
	var r commitResult
	select {
	case r = <-c.reply:
	case <-sp.s.done:
		// The commit may be with the syncer (the owner left it there),
		// which answers what it was handed before it exits. A commit
		// nobody answered by then never reached the owner: nothing was
		// renamed.
		<-sp.s.synced
		select {
		case r = <-c.reply:
		default:
			r.err = ErrClosed
		}
	}
	if r.err == nil {
		// The spool is in data/ now (or was removed as a duplicate):
		// nothing is left to unlink. A claimed spool's file, and its
		// name in tmp/, are the syncer's now.
		sp.done = true
		if !c.claimed {
			sp.f.Close()
		}
	}
	return sum, r.err
}

// sync makes the spool's content durable before the owner takes c: a large
// spool here, in parallel with other writers; small ones by the syncer,
// many with one flush (see syncer.go), which passes a label-less commit on
// to the owner itself (c.back). With NoGroupCommit the owner fsyncs each
// in turn.
func (sp *Spool) sync(ctx context.Context, c *commit) error {
	switch {
	case sp.s.opts.NoGroupCommit:
		return nil
	case sp.size >= selfSyncSize:
		return sp.f.Sync()
	case c.mode == LabelNone:
		c.back = true
		c.marked = sp.s.claims.mark(int(sp.f.Fd()), c.sum)
		c.claimed = c.marked
		return sp.s.groupCommit(ctx, c)
	default:
		// A labelled commit, which the owner sends itself: a cancelled
		// one need not wait for a flush to be refused.
		if err := ctx.Err(); err != nil {
			return err
		}
		return sp.s.groupSync(sp.f, sp.seq)
	}
}

// Discard removes the spool file unless Commit has consumed it.
func (sp *Spool) Discard() {
	if sp.done {
		return
	}
	sp.done = true
	sp.stopPipe()
	sp.s.removeTemp(sp.name) // gone already after a commit
	sp.f.Close()
}

// Put stores everything r yields and returns its hash and size.
func (s *Store) Put(ctx context.Context, r io.Reader) (Hash, int64, error) {
	return s.PutLabeled(ctx, r, "", LabelNone)
}

// PutLabeled stores everything r yields and updates label as mode says.
func (s *Store) PutLabeled(ctx context.Context, r io.Reader, label string, mode LabelMode) (Hash, int64, error) {
	sp, err := s.NewSpool()
	if err != nil {
		return Hash{}, 0, err
	}
	defer sp.Discard()
	n, err := sp.ReadFrom(r)
	if err != nil {
		return Hash{}, n, &Error{Op: "store", Err: err}
	}
	h, err := sp.Commit(ctx, label, mode)
	return h, n, err
}

// putBytes stores content already in memory, and updates label as mode says.
func (s *Store) putBytes(ctx context.Context, content []byte, label string, mode LabelMode) (Hash, error) {
	sp, err := s.NewSpool()
	if err != nil {
		return Hash{}, err
	}
	defer sp.Discard()
	if _, err := sp.Write(content); err != nil {
		return Hash{}, &Error{Op: "store", Err: err}
	}
	return sp.Commit(ctx, label, mode)
}

// stopPipe waits for the pipeline to finish what it was handed, and
// returns (and keeps) the first error it met.
func (sp *Spool) stopPipe() error {
	if sp.pipe != nil {
		if err := sp.pipe.wait(); err != nil && sp.err == nil {
			sp.err = err
		}
		sp.pipe = nil
	}
	return sp.err
}

// The pipeline for large writes in order: a copy of each piece goes to a
// writer goroutine (pwrite into the spool file), then to a hasher
// goroutine. At most pipeDepth pieces wait at each stage, so memory stays
// bounded (a few MiB a spool).
//
// Pieces aligned to directAlign (the usual 1 MiB pieces of cp) are written
// with O_DIRECT: straight from the piece to the disk, with no copy into the
// page cache. That copy costs more CPU than hashing the bytes (a buffered
// 1 GiB write here: 2.9 s of system time; O_DIRECT: 0.13 s), and the
// commit's fsync then has almost nothing left to write. The page cache
// stays coherent: the kernel drops cached pages a direct write covers.
const (
	pipeMin     = 64 << 10 // smaller writes are done in place
	pipeDepth   = 4
	directAlign = 4096 // offset, length and memory alignment for O_DIRECT
)

type writePipe struct {
	f      *os.File
	direct *os.File // f again, opened O_DIRECT; nil where refused (tmpfs)
	h      *Hasher
	write1 chan pipeChunk
	hash1  chan *[]byte
	done   chan struct{}

	mu  sync.Mutex
	err error
}

type pipeChunk struct {
	b   *[]byte
	off int64
}

var chunks = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

func newWritePipe(f *os.File, h *Hasher) *writePipe {
	p := &writePipe{f: f, direct: openDirect(f), h: h,
		write1: make(chan pipeChunk, pipeDepth),
		hash1:  make(chan *[]byte, pipeDepth),
		done:   make(chan struct{}),
	}
	go p.writer()
	go p.hasher()
	return p
}

// openDirect opens f's file again, write-only with O_DIRECT, through
// /proc/self/fd (a new open file description: f keeps its flags). It
// returns nil where the file system or /proc refuses.
func openDirect(f *os.File) *os.File {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), unix.O_WRONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	return os.NewFile(uintptr(fd), f.Name())
}

func (p *writePipe) writer() {
	defer close(p.hash1)
	defer func() {
		if p.direct != nil {
			p.direct.Close()
		}
	}()
	for c := range p.write1 {
		if p.failed() == nil {
			if err := p.writeAt(*c.b, c.off); err != nil {
				p.mu.Lock()
				p.err = err
				p.mu.Unlock()
			}
		}
		p.hash1 <- c.b
	}
}

// writeAt writes b at off: directly when both are aligned, else through
// the page cache.
func (p *writePipe) writeAt(b []byte, off int64) error {
	if p.direct != nil && isAligned(b, off) {
		_, err := p.direct.WriteAt(b, off)
		if !errors.Is(err, unix.EINVAL) {
			return err
		}
		// The file system wants another alignment: the piece is written
		// again, buffered, and so is everything after it.
		p.direct.Close()
		p.direct = nil
	}
	_, err := p.f.WriteAt(b, off)
	return err
}

func isAligned(b []byte, off int64) bool {
	return len(b) > 0 && off%directAlign == 0 && len(b)%directAlign == 0 &&
		uintptr(unsafe.Pointer(unsafe.SliceData(b)))%directAlign == 0
}

func (p *writePipe) hasher() {
	defer close(p.done)
	for b := range p.hash1 {
		p.h.Write(*b)
		if cap(*b) == 1<<20 {
			chunks.Put(b)
		}
	}
}

func (p *writePipe) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// write hands a copy of b, to go at off, to the pipeline.
func (p *writePipe) write(b []byte, off int64) error {
	if err := p.failed(); err != nil {
		return err
	}
	var c *[]byte
	if len(b) <= 1<<20 {
		c = chunks.Get().(*[]byte)
		*c = append((*c)[:0], b...)
	} else {
		cp := append([]byte(nil), b...)
		c = &cp
	}
	p.write1 <- pipeChunk{c, off}
	return nil
}

// wait closes the pipeline, lets it drain, and returns its first error.
func (p *writePipe) wait() error {
	close(p.write1)
	<-p.done
	return p.failed()
}
