package store

import (
	"os"
	"syscall"
)

// VerdictMisses counts the opens that found no remembered verdict and so
// hashed the blob: the tests' way to see that a verdict was used.
func VerdictMisses(s *Store) int64 { return s.verdicts.misses.Load() }

// FailDataSyncs makes the next n fsyncs of data/ fail with EIO, and counts
// every fsync of data/ in *count. Call it before the store is used.
func FailDataSyncs(s *Store, n int, count *int) {
	s.syncDir = func(f *os.File) error {
		*count++
		if n > 0 {
			n--
			return syscall.EIO
		}
		return f.Sync()
	}
}
