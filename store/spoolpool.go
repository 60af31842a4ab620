package store

import (
	"os"
	"time"
)

// Spool files are made ahead of need. Creating a file is the costliest
// step of a small store before its flush (an inode, a directory entry, an
// flock), and with group commit every writer acknowledged by a flush makes
// its next spool at the same moment, on the CPUs the owner's renames need
// too. A goroutine of its own makes them while the syncer's next flush
// waits for the disk, and keeps a few ready (with 8 writers, about 5% more
// stores a second over nine A/B rounds than making them at once).
//
// A ready spool file is an empty, flocked file in tmp/ like any other
// spool's: another process's Open leaves it alone, a crash leaves it for
// the next Open to clear. Those not taken are removed once no writer has
// come for readyIdle, and at Close: a store at rest holds no spool files.

// spoolsReady bounds how many spool files are kept ready. The maker keeps
// twice as many as writers took since it last made some, so that one
// writer now and then costs two spare files, not sixteen.
const spoolsReady = 16

// readyIdle is how long ready spool files wait for a writer before they
// are removed.
const readyIdle = 500 * time.Millisecond

// makerWait bounds the maker's wait for a flush to start before it makes
// the spool files taken meanwhile.
const makerWait = time.Millisecond

type readySpool struct {
	name string
	f    *os.File
	seq  uint64
}

// takeSpoolFile returns a ready spool file, or makes one if none is; it
// starts the maker on the first call.
func (s *Store) takeSpoolFile() (readySpool, error) {
	s.makerOnce.Do(func() {
		s.madeSpools = make(chan readySpool, spoolsReady)
		s.makerDone = make(chan struct{})
		go s.makeSpools()
	})
	if s.madeSpools == nil {
		return s.newSpoolFile()
	}
	s.spoolsTaken.Add(1)
	defer s.wakeMaker()
	select {
	case r := <-s.madeSpools:
		return r, nil
	default:
	}
	return s.newSpoolFile()
}

func (s *Store) newSpoolFile() (readySpool, error) {
	name, f, err := s.createTemp(spoolPrefix)
	return readySpool{name, f, s.spools.Add(1)}, err
}

// wakeMaker tells the maker a spool was wanted.
func (s *Store) wakeMaker() {
	select {
	case s.spoolTaken <- struct{}{}:
	default:
	}
}

// makeSpools keeps spool files ready while writers take them, removes them
// once none has come for readyIdle, and again when stopped (by Close).
func (s *Store) makeSpools() {
	defer close(s.makerDone)
	defer s.discardReady()
	idle := time.NewTimer(readyIdle)
	defer idle.Stop()
	wait := time.NewTimer(makerWait)
	defer wait.Stop()
	for {
		want := min(2*int(max(s.spoolsTaken.Swap(0), 1)), cap(s.madeSpools))
		// The maker is the only sender: below capacity, a send never
		// blocks.
		for len(s.madeSpools) < want {
			r, err := s.newSpoolFile()
			if err != nil {
				// Writers make their own, and report the error;
				// the next one to come makes the maker try again.
				break
			}
			s.madeSpools <- r
		}
		select {
		case <-s.makerStop:
			return
		case <-s.spoolTaken:
			idle.Reset(readyIdle)
			// Make the next ones while the syncer's next flush waits
			// for the disk (or in a moment, without a syncer): just
			// after a flush the CPUs are busy with the writers it
			// answered and the owner's renames.
			select {
			case <-s.flushStarted: // an earlier flush's
			default:
			}
			wait.Reset(makerWait)
			select {
			case <-s.flushStarted:
			case <-wait.C:
			case <-s.makerStop:
				return
			}
			wait.Stop()
		case <-idle.C:
			s.discardReady()
			select { // until the next writer
			case <-s.makerStop:
				return
			case <-s.spoolTaken:
				idle.Reset(readyIdle)
			}
		}
	}
}

// discardReady removes the ready spool files nobody took.
func (s *Store) discardReady() {
	for {
		select {
		case r := <-s.madeSpools:
			s.discardSpoolFile(r)
		default:
			return
		}
	}
}

func (s *Store) discardSpoolFile(r readySpool) {
	s.removeTemp(r.name)
	r.f.Close()
}

// stopSpoolMaker stops the maker (none starts from now on) and waits for
// it to have removed the spool files it made and nobody took. Writers make
// their spools themselves from then on.
func (s *Store) stopSpoolMaker() {
	s.makerOnce.Do(func() {})
	s.stopOnce.Do(func() { close(s.makerStop) })
	if s.makerDone != nil {
		<-s.makerDone
	}
}
