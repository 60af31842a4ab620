package store

// VerdictMisses counts the opens that found no remembered verdict and so
// hashed the blob: the tests' way to see that a verdict was used.
func VerdictMisses(s *Store) int64 { return s.verdicts.misses.Load() }
