// Package store implements Theater's content-addressed store: blobs named by
// the SHA-1 of their content under data/, and labels under labels/, each
// label file holding one or more hashes.
//
// The on-disk format is byte-compatible with Theater's ContentStore. What
// this package adds is safety: writes are atomic and durable (temp file,
// fsync, rename, directory fsync), content is hashed with collision
// detection, blobs are verified before their bytes are served, and nothing
// outside the store directory is ever opened.
//
// One goroutine, the owner, makes every change to data/ and labels/. Each
// operation is a request carrying a context and a reply channel. Blob bytes
// never pass through the owner: writers spool into tmp/ on their own and send
// a commit; readers receive an open file.
package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Directory names inside a store.
const (
	DataDir   = "data"
	LabelsDir = "labels"
	TmpDir    = "tmp"
)

// Temp-file prefixes in tmp/. Anything with these prefixes that no live
// process holds locked is a leftover of a crash and is removed on Open.
const (
	spoolPrefix = "spool-"
	labelPrefix = "label-"
)

// Options tune a Store. The zero value is what production wants.
type Options struct {
	// Logger receives warnings about what the store skips (corrupt label
	// lines, symlinks, stray files). Nil means slog.Default().
	Logger *slog.Logger
	// NoGroupCommit makes the owner commit one blob at a time, each with its
	// own fsyncs. It exists as the baseline for benchmarks.
	NoGroupCommit bool
	// ReadOnly refuses every change.
	ReadOnly bool
}

// Store is an open content store. All methods are safe for concurrent use.
type Store struct {
	dir     string
	root    *os.Root // the store directory: every open goes through it
	data    *os.Root // data/
	dataDir *os.File // data/ itself, for openat and fsync
	tmpDir  *os.File // tmp/ itself: spools are made, renamed and removed relative to it
	labels  *os.Root // labels/
	opts    Options
	log     *slog.Logger

	reqs    chan request
	quit    chan struct{} // closed by Close
	done    chan struct{} // closed when the owner has exited
	retried chan struct{} // closed when retryLeftovers has ended
	syncq   chan syncReq  // spools waiting for the syncer
	back    handBack      // what the owner hands the syncer back
	ready   handBack      // commits whose spools the syncer made durable, for the owner
	synced  chan struct{} // closed when the syncer has exited
	spools  atomic.Uint64 // spools made so far: each one's sequence number

	// Spool files made ahead of need (spoolpool.go).
	makerOnce   sync.Once
	madeSpools  chan readySpool
	makerStop   chan struct{} // closed to stop the maker
	spoolTaken  chan struct{} // one slot: a writer wanted a spool
	spoolsTaken atomic.Int64  // spools wanted since the maker last made some
	// One slot: the syncer has begun a flush, which waits for the disk
	// and leaves the CPUs to the maker.
	flushStarted chan struct{}
	stopOnce     sync.Once
	makerDone    chan struct{} // closed when the maker has exited

	// Renames into data/ are counted in epochs: renamed is the last epoch
	// the owner renamed anything in, durable the last one a sync of data/
	// (by the owner, or the syncer) covered. A blob in data/ may vanish in
	// a crash while durable < renamed, so nothing may point a label at it.
	renamed atomic.Uint64
	durable atomic.Uint64
	// syncedAt is when the last sync of data/ that succeeded began (Unix
	// ns): a blob found in data/ changed since may be another process's
	// rename, not durable yet.
	syncedAt atomic.Int64
	// ownRenames: blobs this process renamed into data/ lately, whose
	// durability the epochs track. Owner only.
	ownRenames map[Hash]bool
	// syncDir fsyncs a directory of the store, syncFS the file system
	// holding a file; tests make them fail.
	syncDir func(*os.File) error
	syncFS  func(*os.File) error

	closeOnce sync.Once // Close may be called from several goroutines at once
	closeErr  error

	verdicts *verdictCache
	claims   claims
}

// Open opens (creating if needed) the store in dir. A directory Theater
// wrote opens as is; only tmp/ is added.
func Open(dir string, opts Options) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, &Error{Op: "open store", Name: dir, Err: err}
	}
	if !opts.ReadOnly {
		if err := os.MkdirAll(abs, 0o755); err != nil {
			return nil, &Error{Op: "open store", Name: abs, Err: err}
		}
		for _, d := range []string{DataDir, LabelsDir, TmpDir} {
			if err := os.Mkdir(filepath.Join(abs, d), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, &Error{Op: "open store", Name: abs, Err: err}
			}
		}
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, &Error{Op: "open store", Name: abs, Err: err}
	}
	s := &Store{dir: abs, root: root, opts: opts, log: opts.Logger, syncDir: (*os.File).Sync, syncFS: syncfs}
	// Some other process may have renamed blobs into data/ and not synced
	// it (a crash, Theater itself): the first label or acknowledgement
	// that depends on a blob found there syncs data/ once.
	s.renamed.Store(1)
	s.ownRenames = map[Hash]bool{}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.data, err = openSubRoot(root, DataDir); err != nil {
		root.Close()
		return nil, &Error{Op: "open store", Name: filepath.Join(abs, DataDir), Err: err}
	}
	if s.dataDir, err = s.data.Open("."); err != nil {
		s.data.Close()
		root.Close()
		return nil, &Error{Op: "open store", Name: filepath.Join(abs, DataDir), Err: err}
	}
	if s.labels, err = openSubRoot(root, LabelsDir); err != nil {
		s.dataDir.Close()
		s.data.Close()
		root.Close()
		return nil, &Error{Op: "open store", Name: filepath.Join(abs, LabelsDir), Err: err}
	}
	// tmp/ is used by path (leftovers, the verdict log): refuse one that
	// is a symlink, which could point anywhere.
	if fi, err := root.Lstat(TmpDir); err == nil && !fi.IsDir() {
		s.labels.Close()
		s.dataDir.Close()
		s.data.Close()
		root.Close()
		return nil, &Error{Op: "open store", Name: filepath.Join(abs, TmpDir), Err: fmt.Errorf("%w: not a directory (a symlink?)", ErrCorrupt)}
	}
	var locked []string // leftovers a process held locked at Open
	if !opts.ReadOnly {
		if s.tmpDir, err = root.Open(TmpDir); err != nil {
			s.labels.Close()
			s.dataDir.Close()
			s.data.Close()
			root.Close()
			return nil, &Error{Op: "open store", Name: filepath.Join(abs, TmpDir), Err: err}
		}
		locked = s.clearLeftovers(func(fn func() error) error { return fn() })
	}
	s.verdicts = newVerdictCache(filepath.Join(abs, TmpDir, "verified"), opts.ReadOnly, s.log)
	s.reqs = make(chan request, 64)
	s.quit = make(chan struct{})
	s.done = make(chan struct{})
	s.retried = make(chan struct{})
	s.syncq = make(chan syncReq, 64)
	s.back.wake = make(chan struct{}, 1)
	s.ready.wake = make(chan struct{}, 1)
	s.makerStop = make(chan struct{})
	s.spoolTaken = make(chan struct{}, 1)
	s.flushStarted = make(chan struct{}, 1)
	s.synced = make(chan struct{})
	go s.own()
	if opts.ReadOnly || opts.NoGroupCommit {
		close(s.synced)
	} else {
		go s.syncLoop()
	}
	if len(locked) > 0 {
		go s.retryLeftovers(locked)
	} else {
		close(s.retried)
	}
	return s, nil
}

// openSubRoot opens a directory of the store, refusing a symlink in its
// place (it could point anywhere).
func openSubRoot(root *os.Root, name string) (*os.Root, error) {
	fi, err := root.Lstat(name)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("not a directory")
	}
	return root.OpenRoot(name)
}

// Dir returns the store's absolute path.
func (s *Store) Dir() string { return s.dir }

// clearLeftovers removes temp files that a crashed writer left in tmp/, and
// returns those it found locked, for retryLeftovers. A live writer (in this
// process or another) holds an flock on its file, so its spool is never
// taken from under it.
func (s *Store) clearLeftovers(do func(func() error) error) (locked []string) {
	entries, err := os.ReadDir(filepath.Join(s.dir, TmpDir))
	if err != nil {
		s.log.Warn("cannot list tmp/", "err", err)
		return nil
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, spoolPrefix) && !strings.HasPrefix(name, labelPrefix) {
			continue
		}
		if s.clearLeftover(name, do) {
			locked = append(locked, name)
		}
	}
	return locked
}

// clearLeftover removes tmp/name unless a process holds it locked, and
// reports whether one does. A claimed spool's content is put in data/
// first, if it is good and not there (claim.go). do runs a change to data/:
// on the owner, once it runs.
func (s *Store) clearLeftover(name string, do func(func() error) error) (locked bool) {
	var fd int
	err := s.inTmp(func(dir int) (err error) {
		fd, err = unix.Openat(dir, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return false // gone (committed or discarded since), or no file to clear
	}
	f := os.NewFile(uintptr(fd), filepath.Join(s.dir, TmpDir, name))
	defer f.Close()
	if unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB) != nil {
		return true
	}
	if h, ok := readClaim(fd); ok && strings.HasPrefix(name, spoolPrefix) {
		if err := s.rescue(name, f, h, do); err != nil {
			// Kept for the next Open: it may be the blob's only copy.
			s.log.Warn("cannot recover a blob from an interrupted commit; its spool is kept for the next open", "spool", "tmp/"+name, "hash", h.String(), "err", err)
			return false
		}
	}
	s.removeTemp(name)
	return false
}

// retryLeftovers' delays between tries: doubling from the first to the
// longest.
const (
	retryFirst = 10 * time.Millisecond
	retryMax   = 2 * time.Second
)

// retryLeftovers tries the leftovers found locked at Open again, until each
// is gone, or Close.
//
// A lock does not always mean a live writer. A server killed a moment ago
// holds its files until the kernel has torn it down, and the kernel
// releases them from the highest descriptor down: a spool on a descriptor
// below /dev/fuse's is unlocked only after /dev/fuse is released, the
// release that lets a new mount on the same mountpoint start, and with it
// this Open. Taken once, such a spool stayed in tmp/ until some later Open.
// A live writer's spool goes when its writer commits or discards it; the
// tries meanwhile grow rarer.
func (s *Store) retryLeftovers(names []string) {
	defer close(s.retried)
	delay := retryFirst
	t := time.NewTimer(delay)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		names = slices.DeleteFunc(names, func(name string) bool { return !s.clearLeftover(name, s.onOwner) })
		if len(names) == 0 {
			return
		}
		delay = min(2*delay, retryMax)
		t.Reset(delay)
	}
}

// onOwner runs fn on the owner.
func (s *Store) onOwner(fn func() error) error {
	_, err := call(context.Background(), s, func() (struct{}, error) { return struct{}{}, fn() })
	return err
}

// Close stops the owner goroutine after the requests already queued, and
// releases the store's directories. Operations after Close fail with
// ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.quit)
		<-s.done
		<-s.synced
		<-s.retried // it works in tmp/
		s.stopSpoolMaker()
		s.verdicts.close()
		s.labels.Close()
		s.dataDir.Close()
		if s.tmpDir != nil {
			s.tmpDir.Close()
		}
		s.data.Close()
		s.closeErr = s.root.Close()
	})
	return s.closeErr
}

// request is one message to the owner goroutine. run executes on the owner;
// it replies on a channel the caller made (buffered, so the owner never
// blocks on a caller that has gone away).
type request struct {
	ctx    context.Context
	run    func()
	commit *commit // set for blob commits, which the owner batches
}

// call sends fn to the owner and waits for its result, or for ctx.
func call[T any](ctx context.Context, s *Store, fn func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	var zero T
	reply := make(chan result, 1)
	req := request{ctx: ctx, run: func() {
		v, err := fn()
		reply <- result{v, err}
	}}
	if err := s.send(ctx, req); err != nil {
		return zero, err
	}
	select {
	case r := <-reply:
		return r.v, r.err
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-s.done:
		// The owner has exited. A request that raced with Close may sit in
		// the channel unserved; drain answered the rest before done closed.
		select {
		case r := <-reply:
			return r.v, r.err
		default:
			return zero, ErrClosed
		}
	}
}

func (s *Store) send(ctx context.Context, req request) error {
	return enqueue(ctx, s.quit, s.reqs, req)
}

// enqueue sends v on ch unless the store is closing or ctx has ended.
func enqueue[T any](ctx context.Context, quit <-chan struct{}, ch chan<- T, v T) error {
	select {
	case <-quit:
		return ErrClosed
	default:
	}
	// A select with several ready cases picks one at random: without this
	// check a cancelled request would be enqueued half the time, and a
	// commit (which the owner runs whatever its context) would succeed.
	if err := ctx.Err(); err != nil {
		return err
	}
	select {
	case ch <- v:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-quit:
		return ErrClosed
	}
}

// own is the owner goroutine: the only code that changes data/ and labels/.
func (s *Store) own() {
	defer close(s.done)
	var batch []*commit
	for {
		batch = batch[:0]
		select {
		case req := <-s.reqs:
			if req.commit == nil {
				s.serve(req)
				continue
			}
			batch = append(batch, req.commit)
		case <-s.ready.wake:
		case <-s.quit:
			s.drain()
			return
		}
		// Group commit: take every commit already waiting (sent, or
		// passed on by the syncer), and make them durable together. A
		// non-commit request met on the way is served after the batch,
		// in order.
		ready, _, _ := s.ready.take()
		batch = append(batch, ready...)
		var next *request
	gather:
		for !s.opts.NoGroupCommit && len(batch) < 256 {
			select {
			case r := <-s.reqs:
				if r.commit == nil {
					next = &r
					break gather
				}
				batch = append(batch, r.commit)
			default:
				break gather
			}
		}
		if len(batch) > 0 {
			s.commitBatch(batch)
		}
		if next != nil {
			s.serve(*next)
		}
	}
}

func (s *Store) serve(req request) {
	if req.ctx.Err() != nil && req.commit == nil {
		// The caller has gone; it no longer waits for the reply.
		return
	}
	req.run()
}

// drain answers the requests still queued at Close, so no caller hangs.
func (s *Store) drain() {
	ready, _, _ := s.ready.take()
	for _, c := range ready {
		c.reply <- commitResult{err: ErrClosed}
	}
	for {
		select {
		case req := <-s.reqs:
			if req.commit != nil {
				req.commit.reply <- commitResult{err: ErrClosed}
				continue
			}
			req.run()
		default:
			return
		}
	}
}
