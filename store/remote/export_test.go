package remote

// ForceTombstones makes s remove labels by tombstone, as it does on a
// service that ignores conditions on DELETE, without asking the service.
func ForceTombstones(s *Store) { s.forceTombs = true }

// Tombstones reports whether s removes labels by tombstone.
var Tombstones = (*Store).tombstones
