package store

import (
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The syncer makes many commits durable with one flush of the disk. Each
// small blob needs two flushes: one of its content before its rename into
// data/, one of the rename before anything (an acknowledgement, a label)
// depends on it. Both are asked of the syncer: writers send their spools,
// and the owner hands back the label-less commits it has just renamed. One
// syncfs covers the content of every spool waiting and every rename made
// before it, so each flush serves one group of blobs' first and another's
// second.
//
// After a flush the syncer waits a little for the renames of the spools it
// has just made durable, so that the next flush carries them: without the
// wait it would start with only the spools that came meanwhile, and the
// renames would wait a whole flush more.
//
// Spool files belong to their writers, not to the owner: the syncer only
// syncs, and answers the commits the owner handed it.

// renameWait bounds the wait for the renames of the spools a flush made
// durable. They come back within tens of microseconds unless the writer
// has given up, or the owner settled them itself (it says so).
const renameWait = 500 * time.Microsecond

type syncReq struct {
	// A spool to make durable: its file, and its sequence number (lower
	// ones were made earlier).
	f    *os.File
	seq  uint64
	done chan error
	// back: the spool's commit carries no label, so the owner hands it
	// back to the syncer (or says it settled it): worth waiting for.
	back bool
}

// handBack is the owner's way to the syncer, which never makes it wait: the
// commits it renamed into data/, each acknowledged once its rename is
// durable, and how many commits of spools sent back it is done with (those,
// or answered itself), so the syncer waits for them no longer.
type handBack struct {
	mu      sync.Mutex
	commits []*commit
	settled int
	wake    chan struct{} // one slot: something was handed back
}

func (hb *handBack) put(commits []*commit, settled int) {
	hb.mu.Lock()
	hb.commits = append(hb.commits, commits...)
	hb.settled += settled
	hb.mu.Unlock()
	select {
	case hb.wake <- struct{}{}:
	default:
	}
}

func (hb *handBack) take() ([]*commit, int) {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	c, n := hb.commits, hb.settled
	hb.commits, hb.settled = nil, 0
	return c, n
}

// syncLoop is the syncer goroutine. It runs until the owner has exited, so
// every commit the owner hands it is answered.
func (s *Store) syncLoop() {
	defer close(s.synced)
	var b syncBatch
	pending := 0 // spools sent back that the last flush made durable, whose commits have not come back
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		b.reset()
		select {
		case r := <-s.syncq:
			b.add(r)
		case <-s.back.wake:
		case <-s.done:
			// The owner sends nothing more. Make durable what was sent;
			// a writer sending from now on sees synced closed.
			pending -= s.gather(&b)
			if !b.empty() {
				s.flush(&b)
			}
			return
		}
		pending -= s.gather(&b)
		if pending > 0 {
			timer.Reset(renameWait)
		wait:
			for pending > 0 {
				select {
				case r := <-s.syncq:
					b.add(r)
				case <-s.back.wake:
					pending -= s.gather(&b)
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		pending = s.flush(&b)
	}
}

// syncBatch is what one flush makes durable.
type syncBatch struct {
	spools  []syncReq
	commits []*commit
}

func (b *syncBatch) reset()        { b.spools, b.commits = b.spools[:0], b.commits[:0] }
func (b *syncBatch) add(r syncReq) { b.spools = append(b.spools, r) }
func (b *syncBatch) empty() bool   { return len(b.spools) == 0 && len(b.commits) == 0 }

// gather adds every spool waiting and everything handed back to b, and
// returns how many spools the owner says it is done with.
func (s *Store) gather(b *syncBatch) int {
	for {
		select {
		case r := <-s.syncq:
			b.add(r)
			continue
		default:
		}
		break
	}
	commits, settled := s.back.take()
	b.commits = append(b.commits, commits...)
	return settled
}

// flush makes a batch durable with one flush and answers it. It returns
// how many spools sent back it made durable.
func (s *Store) flush(b *syncBatch) int {
	// syncfs reports a write error that happened since the file it is
	// given was opened: give it the oldest file of the batch, so an error
	// writing any of them (or a rename after it was opened) is seen.
	var oldest *os.File
	var oldestSeq uint64
	consider := func(f *os.File, seq uint64) {
		if oldest == nil || seq < oldestSeq {
			oldest, oldestSeq = f, seq
		}
	}
	back := 0
	for _, r := range b.spools {
		consider(r.f, r.seq)
		if r.back {
			back++
		}
	}
	for _, c := range b.commits {
		consider(c.f, c.seq)
	}
	// Every rename counted until now is done: the flush below covers it.
	epoch, start := s.renamed.Load(), fileClock()
	var err error
	switch {
	case len(b.spools) == 0 && len(b.commits) == 0:
		return 0
	case len(b.spools) == 0:
		err = s.syncDir(s.dataDir)
	case len(b.spools) == 1 && len(b.commits) == 0:
		err = oldest.Sync()
		epoch = 0 // a file's fsync covers no rename
	default:
		// One flush for all: the spools' content, and data/ with the
		// renames.
		err = s.syncFS(oldest)
	}
	if err == nil && epoch > 0 {
		s.markSynced(epoch, start)
	}
	for _, r := range b.spools {
		r.done <- err
	}
	for _, c := range b.commits {
		if err != nil {
			c.err = blobErr(c.sum, fmt.Errorf("syncing data/: %w", err))
		}
		c.reply <- commitResult{err: c.err}
	}
	if err != nil {
		return 0 // their writers give up
	}
	return back
}

func syncfs(f *os.File) error { return unix.Syncfs(int(f.Fd())) }

// markSynced notes a sync of data/ that began at start (fileClock) and
// succeeded: every rename up to epoch is durable.
func (s *Store) markSynced(epoch uint64, start int64) {
	for {
		d := s.durable.Load()
		if epoch <= d || s.durable.CompareAndSwap(d, epoch) {
			break
		}
	}
	for {
		t := s.syncedAt.Load()
		if start <= t || s.syncedAt.CompareAndSwap(t, start) {
			return
		}
	}
}

// groupSync makes f's content durable together with the other spools
// waiting at the moment.
func (s *Store) groupSync(f *os.File, seq uint64, back bool) error {
	r := syncReq{f: f, seq: seq, back: back, done: make(chan error, 1)}
	select {
	case s.syncq <- r:
	case <-s.quit:
		return ErrClosed
	}
	select {
	case err := <-r.done:
		return err
	case <-s.synced:
		// The syncer has exited; it answered everything it took.
		select {
		case err := <-r.done:
			return err
		default:
			return ErrClosed
		}
	}
}
