package store

import (
	"context"
	"fmt"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The syncer makes many commits durable with one flush of the disk. A small
// blob needs one flush when its spool carries a claim (claim.go): the
// flush makes content and claim durable, the owner links the spool into
// data/ and answers, and a later flush covers the link before the syncer
// unlinks the spool's name in tmp/. Without a claim it needs two: one of
// its content before its rename into data/, one of the rename before
// anything (an acknowledgement, a label) depends on it; the owner hands
// such commits back once renamed. One syncfs covers the content of every
// spool waiting and every rename and link made before it.
//
// A label-less commit travels with its spool: once the flush has made the
// spool durable, the syncer passes the commit straight on to the owner
// (ready), which links or renames the group. The writer only waits for the
// answer.
//
// After a flush the syncer waits a little for the next spools of the
// writers it served, and of those whose spools came during the flush (the
// writers it knows to be busy), so that the next flush carries them all:
// a flush costs about the same for one spool as for eight. Unclaimed
// commits' renames are waited for the same way, so that the next flush
// carries them rather than the one after.
//
// Spool files belong to their writers, not to the owner: the syncer syncs,
// passes on to the owner the commits whose spools it made durable (or
// answers them itself when the flush failed or the owner has exited), and
// answers the commits the owner handed back. Claimed spools linked into
// data/ are the syncer's until it unlinks them.

// renameWait bounds the wait for the renames of the spools a flush made
// durable. They come back within tens of microseconds unless the owner
// settled them itself (it says so), or has exited.
const renameWait = 500 * time.Microsecond

// spoolWait bounds the wait, from the end of a flush, for the next spools
// of the writers it served: they come within a few hundred microseconds
// when writers store one blob after another (eight of them, on two CPUs,
// after the owner has linked eight blobs).
const spoolWait = 400 * time.Microsecond

type syncReq struct {
	// A spool to make durable: its file, and its sequence number (lower
	// ones were made earlier).
	f   *os.File
	seq uint64
	// c is the spool's commit when it carries no label: once the spool is
	// durable it goes to the owner, which hands it back to the syncer (or
	// says it settled it), so it is worth waiting for. Without one, the
	// writer is told on done and sends its commit itself.
	c    *commit
	done chan error
}

// handBack carries commits between the syncer and the owner without ever
// making either wait. The owner hands back the commits it renamed into
// data/, each acknowledged once its rename is durable, and how many
// commits of spools sent back it is done with (those, or answered itself),
// so the syncer waits for them no longer. The syncer passes on the commits
// whose spools it made durable (ready), for the owner to rename.
//
// With claims (claim.go), the owner answers the claimed commits itself, and
// hands them to the syncer (unlinks), to unlink their spools' names in tmp/
// once a flush has made their links into data/ durable. The spool files
// are the syncer's from then on.
type handBack struct {
	mu      sync.Mutex
	commits []*commit
	settled int
	unlinks []*commit
	wake    chan struct{} // one slot: something was put
}

func (hb *handBack) put(commits []*commit, settled int, unlinks []*commit) {
	hb.mu.Lock()
	hb.commits = append(hb.commits, commits...)
	hb.settled += settled
	hb.unlinks = append(hb.unlinks, unlinks...)
	hb.mu.Unlock()
	select {
	case hb.wake <- struct{}{}:
	default:
	}
}

func (hb *handBack) take() ([]*commit, int, []*commit) {
	hb.mu.Lock()
	defer hb.mu.Unlock()
	c, n, u := hb.commits, hb.settled, hb.unlinks
	hb.commits, hb.settled, hb.unlinks = nil, 0, nil
	return c, n, u
}

// syncLoop is the syncer goroutine. It runs until the owner has exited, so
// every commit the owner hands it is answered.
func (s *Store) syncLoop() {
	defer close(s.synced)
	var b syncBatch
	// After each flush: how many commits it passed on to the owner whose
	// renames have not come back (pending), and how many writers are
	// likely to send a spool soon (expect): those it served, and those
	// whose spools came during the flush.
	pending, expect := 0, 0
	var flushed time.Time // when the last flush ended
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
			s.gather(&b)
			s.flush(&b, true)
			return
		}
		pending -= s.gather(&b)
		for pending > 0 || len(b.spools) < expect {
			// Wait for the renames, and for a little while for the
			// spools of the busy writers, so the next flush carries
			// them all.
			left := renameWait - time.Since(flushed)
			if pending <= 0 {
				left = spoolWait - time.Since(flushed)
			}
			if left <= 0 {
				break
			}
			timer.Reset(left)
			select {
			case r := <-s.syncq:
				b.add(r)
			case <-s.back.wake:
				pending -= s.gather(&b)
			case <-timer.C:
			}
			timer.Stop()
		}
		if b.empty() {
			continue // woken for nothing: what was expected still is
		}
		// Renames still due from a wait that timed out are still due.
		renames, served := s.flush(&b, false)
		pending, expect = max(pending, 0)+renames, served+len(s.syncq)
		flushed = time.Now()
	}
}

// syncBatch is what one flush makes durable.
type syncBatch struct {
	spools  []syncReq
	commits []*commit
	// Claimed commits whose spools are linked into data/ (or found there),
	// their names in tmp/ to unlink once a flush has covered the links.
	unlinks []*commit
}

func (b *syncBatch) reset() {
	b.spools, b.commits, b.unlinks = b.spools[:0], b.commits[:0], b.unlinks[:0]
}

func (b *syncBatch) add(r syncReq) { b.spools = append(b.spools, r) }
func (b *syncBatch) empty() bool {
	return len(b.spools) == 0 && len(b.commits) == 0 && len(b.unlinks) == 0
}

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
	commits, settled, unlinks := s.back.take()
	b.commits = append(b.commits, commits...)
	b.unlinks = append(b.unlinks, unlinks...)
	return settled
}

// flush makes a batch durable with one flush and answers it: the writers
// of spools without a commit, and the commits handed back. The commits of
// the spools it made durable go on to the owner, unless it has exited
// (ownerGone). It returns how many went on whose renames the syncer waits
// for (the unclaimed), and how many writers are likely to send a spool
// next: those it acknowledged, and those the owner will (the claimed).
func (s *Store) flush(b *syncBatch, ownerGone bool) (pending, expect int) {
	if b.empty() {
		return 0, 0
	}
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
	for _, r := range b.spools {
		consider(r.f, r.seq)
	}
	for _, c := range b.commits {
		consider(c.f, c.seq)
	}
	// Every rename counted until now is done: the flush below covers it.
	epoch, start := s.renamed.Load(), fileClock()
	select {
	case s.flushStarted <- struct{}{}:
	default:
	}
	var err error
	switch {
	case len(b.spools) == 0 && len(b.unlinks) == 0:
		err = s.syncDir(s.dataDir)
	case len(b.spools) == 1 && len(b.commits) == 0 && len(b.unlinks) == 0:
		err = oldest.Sync()
		epoch = 0 // a file's fsync covers no rename
	default:
		// One flush for all: the spools' content, data/ with the
		// renames and links, and the linked spools' link counts (a
		// sync of data/ alone would leave those, and a blob found in
		// place, to chance).
		if oldest == nil {
			oldest = s.dataDir
		}
		err = s.syncFS(oldest)
	}
	if err == nil && epoch > 0 {
		s.markSynced(epoch, start)
	}
	if err != nil {
		s.claims.failed.Store(true)
	}
	s.unlinkClaimed(b.unlinks)
	var ready []*commit
	for _, r := range b.spools {
		switch {
		case r.c == nil:
			r.done <- err
		case err != nil:
			r.c.reply <- commitResult{err: &Error{Op: "store", Name: r.c.sum.String(), Err: err}}
		case ownerGone:
			r.c.reply <- commitResult{err: ErrClosed}
		default:
			ready = append(ready, r.c)
			if r.c.claimed {
				expect++
			} else {
				r.c.awaited = true
				pending++
			}
		}
	}
	for _, c := range b.commits {
		if err != nil {
			c.err = blobErr(c.sum, fmt.Errorf("syncing data/: %w", err))
		}
		if c.err == nil {
			expect++
		}
		c.reply <- commitResult{err: c.err}
	}
	if len(ready) > 0 {
		s.ready.put(ready, 0, nil)
	}
	return pending, expect
}

// unlinkClaimed removes the names in tmp/ of claimed spools whose links
// into data/ a flush has just made durable, and their claims, which a blob
// in data/ does not keep; then it closes their files. Once a flush has
// failed (claims.failed) it unlinks nothing: the next Open finds them. A
// blob's good verdict is carried over these changes, which move its ctime.
func (s *Store) unlinkClaimed(cs []*commit) {
	s.verdicts.hold()
	defer s.verdicts.release()
	durable := !s.claims.failed.Load()
	for _, c := range cs {
		if durable {
			before, err := c.f.Stat()
			if c.renamed {
				unclaim(int(c.f.Fd()))
			}
			s.removeTemp(c.tmp)
			if err == nil && c.renamed {
				if after, err := c.f.Stat(); err == nil {
					s.verdicts.refresh(c.sum, before, after)
				}
			}
		}
		c.f.Close()
		s.claims.out.Add(-1)
	}
}

// syncfs makes everything written to f's file system durable. syncfs(2)
// alone does not, on a file system without a journal (ext4 without one, as
// on the VM this was measured on): it issues the disk's cache flush, and
// only then writes the last inode table blocks, with the sizes that
// writes completing during the sync set. The block layer's tracepoints
// show those writes after the flush, left in the disk's cache until the
// next one; a crash then could give an acknowledged blob no length. An
// fsync after it flushes again (about 60 us here; a bare flush on a
// journalling file system, whose sync commits everything).
func syncfs(f *os.File) error {
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return err
	}
	return f.Sync()
}

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

// groupSync makes a spool durable with the syncer's next flush, for a
// writer that sends its commit itself (a labelled one).
func (s *Store) groupSync(f *os.File, seq uint64) error {
	r := syncReq{f: f, seq: seq, done: make(chan error, 1)}
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

// groupCommit hands a label-less commit to the syncer with its spool: the
// syncer makes the spool durable and passes the commit on to the owner.
// The answer comes on c.reply.
func (s *Store) groupCommit(ctx context.Context, c *commit) error {
	return enqueue(ctx, s.quit, s.syncq, syncReq{f: c.f, seq: c.seq, c: c})
}
