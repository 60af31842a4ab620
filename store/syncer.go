package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// The syncer makes small spools durable for their writers, many at a time:
// one syncfs for every spool waiting, while the owner renames the batch
// synced before into data/. Group commit thus runs as a pipeline of two
// stages, the disk's flush of one batch beside the owner's renames and
// directory fsync of the other. Spool files belong to their writers, not
// to the owner: the syncer touches nothing the owner keeps.

type syncReq struct {
	f    *os.File
	seq  uint64 // the spool's sequence number: lower ones were made earlier
	done chan error
}

// syncLoop is the syncer goroutine, running from Open until Close.
func (s *Store) syncLoop() {
	defer close(s.synced)
	var batch []syncReq
	for {
		select {
		case r := <-s.syncq:
			batch = append(batch[:0], r)
		case <-s.quit:
			for {
				select {
				case r := <-s.syncq:
					r.done <- ErrClosed
				default:
					return
				}
			}
		}
	gather:
		for {
			select {
			case r := <-s.syncq:
				batch = append(batch, r)
			default:
				break gather
			}
		}
		var err error
		if len(batch) == 1 {
			err = batch[0].f.Sync()
		} else {
			// One flush of the disk's cache for the whole batch. syncfs
			// reports a write error that happened since the file it is
			// given was opened: give it the oldest spool, so an error
			// writing any of them is seen.
			oldest := batch[0]
			for _, r := range batch[1:] {
				if r.seq < oldest.seq {
					oldest = r
				}
			}
			err = unix.Syncfs(int(oldest.f.Fd()))
		}
		for _, r := range batch {
			r.done <- err
		}
	}
}

// groupSync makes f's content durable together with the other spools
// waiting at the moment.
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
