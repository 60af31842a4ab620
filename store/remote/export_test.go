package remote

import "context"

// ForceTombstones makes s remove labels by tombstone, as it does on a
// service that ignores conditions on DELETE, without asking the service.
func ForceTombstones(s *Store) { s.labels.(*s3Labels).forceTombs = true }

// Tombstones reports whether s removes labels by tombstone.
func Tombstones(s *Store, ctx context.Context) (bool, error) {
	return s.labels.(*s3Labels).tombstones(ctx)
}
