package store

import (
	"os"
	"sync"
	"sync/atomic"
	"syscall"
)

// VerdictMisses counts the opens that found no remembered verdict and so
// hashed the blob: the tests' way to see that a verdict was used.
func VerdictMisses(s *Store) int64 { return s.verdicts.misses.Load() }

// FailDataSyncs makes the next n fsyncs of data/ fail with EIO, and counts
// every fsync of data/ in *count. Call it before the store is used. While
// the syncer may sync, read the count with the function returned.
func FailDataSyncs(s *Store, n int, count *int) func() int {
	var mu sync.Mutex // the owner and the syncer both sync data/
	read := func() int {
		mu.Lock()
		defer mu.Unlock()
		return *count
	}
	s.syncDir = func(f *os.File) error {
		mu.Lock()
		defer mu.Unlock()
		*count++
		if n > 0 {
			n--
			return syscall.EIO
		}
		return f.Sync()
	}
	return read
}

// LimitVerdicts holds at most n verdicts in memory until the test ends.
func LimitVerdicts(t interface{ Cleanup(func()) }, n int) {
	old := verdictsMax
	verdictsMax = n
	t.Cleanup(func() { verdictsMax = old })
}

// Verdicts is how many verdicts s holds in memory.
func Verdicts(s *Store) int {
	s.verdicts.mu.Lock()
	defer s.verdicts.mu.Unlock()
	return len(s.verdicts.m)
}

// FailSyncfs makes every syncfs fail with EIO while *fail is set, and
// counts the ones that failed in *failed.
func FailSyncfs(s *Store, fail *atomic.Bool, failed *atomic.Int64) {
	s.syncFS = func(f *os.File) error {
		if fail.Load() {
			failed.Add(1)
			return syscall.EIO
		}
		return syncfs(f)
	}
}

// StopSpoolMaker stops making spool files ahead of need and removes those
// made and not taken; later spools are made when needed.
func StopSpoolMaker(s *Store) { s.stopSpoolMaker() }

// RefuseClaims makes s store as on a file system without extended
// attributes: every small blob waits for two flushes (claim.go).
func RefuseClaims(s *Store) { s.claims.refused.Store(true) }

// ClaimsOut is how many claimed spools s has linked into data/ and not yet
// unlinked from tmp/.
func ClaimsOut(s *Store) int64 { return s.claims.out.Load() }
