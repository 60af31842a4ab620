package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

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
	h      *Hasher
	hashed int64 // bytes hashed in order so far
	size   int64
	dirty  bool // written out of order: rehash at commit
	done   bool
	pipe   *hashPipe // hashing large writes beside the writer, once started
	err    error     // the first write or truncate error: nothing commits after one
}

// NewSpool starts a new spool file in tmp/. No request goes to the owner:
// tmp/ belongs to whoever creates a file in it.
func (s *Store) NewSpool() (*Spool, error) {
	if s.opts.ReadOnly {
		return nil, &Error{Op: "store", Err: errReadOnly}
	}
	name, f, err := s.createTemp(spoolPrefix)
	if err != nil {
		select {
		case <-s.quit: // the store's directories are closed, or closing
			return nil, &Error{Op: "store", Err: ErrClosed}
		default:
		}
		return nil, &Error{Op: "store", Name: "tmp/", Err: err}
	}
	return &Spool{s: s, f: f, name: name, h: NewHasher()}, nil
}

var errReadOnly = fmt.Errorf("read-only store: %w", os.ErrPermission)

// createTemp creates a fresh file in tmp/ and holds an flock on it for as
// long as it is open, which tells Open in another process that it is live.
func (s *Store) createTemp(prefix string) (string, *os.File, error) {
	var rnd [12]byte
	for range 10 {
		rand.Read(rnd[:])
		name := prefix + hex.EncodeToString(rnd[:])
		f, err := s.root.OpenFile(TmpDir+"/"+name, os.O_RDWR|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o644)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		if err != nil {
			return "", nil, err
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			s.root.Remove(TmpDir + "/" + name)
			return "", nil, fmt.Errorf("locking temp file: %w", err)
		}
		return name, f, nil
	}
	return "", nil, errors.New("cannot create a temp file name")
}

// Write appends p.
func (sp *Spool) Write(p []byte) (int, error) { return sp.WriteAt(p, sp.size) }

// WriteAt writes p at off.
func (sp *Spool) WriteAt(p []byte, off int64) (int, error) {
	if sp.done {
		return 0, os.ErrClosed
	}
	if sp.err != nil {
		return 0, sp.err
	}
	n, err := sp.f.WriteAt(p, off)
	if err != nil {
		// A short write (a full disk) leaves the file's length unknown to
		// us: the spool is spoiled, and Commit refuses it.
		sp.err = err
		return n, err
	}
	if !sp.dirty && off == sp.hashed {
		if sp.pipe == nil && n >= pipeMin {
			sp.pipe = newHashPipe(sp.h)
		}
		if sp.pipe != nil {
			sp.pipe.write(p[:n]) // in order, after what it holds
		} else {
			sp.h.Write(p[:n])
		}
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
func (sp *Spool) ReadFrom(r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := sp.Write(buf[:n]); werr != nil {
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
func (sp *Spool) ReadAt(p []byte, off int64) (int, error) { return sp.f.ReadAt(p, off) }

// Truncate sets the spool's size.
func (sp *Spool) Truncate(size int64) error {
	if sp.done {
		return os.ErrClosed
	}
	if sp.err != nil {
		return sp.err
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
// or copy). Writes must go through the Spool.
func (sp *Spool) File() *os.File { return sp.f }

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
// The spool is consumed, successful or not.
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
		if _, err := io.CopyBuffer(sp.h, io.NewSectionReader(sp.f, 0, sp.size), make([]byte, 1<<20)); err != nil {
			return Hash{}, &Error{Op: "store", Err: fmt.Errorf("rereading spool: %w", err)}
		}
	}
	sum, err := sp.h.Sum()
	if err != nil {
		return sum, &Error{Op: "store", Name: sum.String(), Err: err}
	}
	// A large spool is made durable here, in parallel with other writers,
	// so the owner's batch never waits for its bytes. Small ones are left
	// to the owner, which syncs a whole batch of them at once.
	synced := false
	if !sp.s.opts.NoGroupCommit && sp.size >= selfSyncSize {
		if err := sp.f.Sync(); err != nil {
			return sum, &Error{Op: "store", Name: sum.String(), Err: err}
		}
		synced = true
	}
	c := &commit{
		tmp: sp.name, f: sp.f, sum: sum, size: sp.size, synced: synced,
		label: label, mode: mode,
		reply: make(chan commitResult, 1),
	}
	if err := sp.s.send(ctx, request{ctx: ctx, commit: c}); err != nil {
		return sum, err
	}
	// Wait for the owner even if ctx ends: the rename may be under way,
	// and the spool file must stay locked until it is done. If the owner
	// has exited (Close) without taking the commit, it never will.
	var r commitResult
	select {
	case r = <-c.reply:
	case <-sp.s.done:
		select {
		case r = <-c.reply:
		default:
			r.err = ErrClosed
		}
	}
	if r.err == nil {
		// The spool is in data/ now (or was removed as a duplicate):
		// nothing is left to unlink.
		sp.done = true
		sp.f.Close()
	}
	return sum, r.err
}

// Discard removes the spool file unless Commit has consumed it.
func (sp *Spool) Discard() {
	if sp.done {
		return
	}
	sp.done = true
	sp.stopPipe()
	sp.s.root.Remove(TmpDir + "/" + sp.name) // gone already after a commit
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

// stopPipe waits for the hashing goroutine to finish what it was handed.
func (sp *Spool) stopPipe() {
	if sp.pipe != nil {
		sp.pipe.wait()
		sp.pipe = nil
	}
}

// Hashing beside the writer: a spool written in large pieces (a file
// copied through the mount, a put from a pipe) hands each piece to a
// goroutine that hashes it while the writer waits for its next piece. The
// pieces are copies, since the writer's buffer is reused as soon as WriteAt
// returns, and at most pipeDepth of them wait, so memory stays bounded.
const (
	pipeMin   = 64 << 10 // smaller writes are hashed in place
	pipeDepth = 4
)

type hashPipe struct {
	h    *Hasher
	ch   chan *[]byte
	done chan struct{}
}

var chunks = sync.Pool{New: func() any { b := make([]byte, 0, 1<<20); return &b }}

func newHashPipe(h *Hasher) *hashPipe {
	p := &hashPipe{h: h, ch: make(chan *[]byte, pipeDepth), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *hashPipe) run() {
	defer close(p.done)
	for c := range p.ch {
		p.h.Write(*c)
		if cap(*c) == 1<<20 {
			chunks.Put(c)
		}
	}
}

func (p *hashPipe) write(b []byte) {
	var c *[]byte
	if len(b) <= 1<<20 {
		c = chunks.Get().(*[]byte)
		*c = append((*c)[:0], b...)
	} else {
		cp := append([]byte(nil), b...)
		c = &cp
	}
	p.ch <- c
}

func (p *hashPipe) wait() {
	close(p.ch)
	<-p.done
}
