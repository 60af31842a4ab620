package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"

	"github.com/theater-storefs/theater-storefs/store"
)

// probeDir holds the objects the store writes to learn how the service
// behaves; no label or blob is ever there.
const probeDir = ".theater-storefs/"

// tombstones reports whether labels are removed by tombstone: whether the
// service ignores If-Match on DELETE. It asks the service once, the first
// time a label is removed: a probe object is deleted on a condition that
// does not hold, and must survive it.
func (s *Store) tombstones(ctx context.Context) (bool, error) {
	s.probeMu.Lock()
	defer s.probeMu.Unlock()
	if s.probed {
		return s.tombs, nil
	}
	if s.forceTombs {
		s.probed, s.tombs = true, true
		return true, nil
	}
	key := fmt.Sprintf("%sprobe-%016x", probeDir, rand.Uint64())
	etag, err := s.b.put(ctx, key, bytes.NewReader([]byte("probe")), 5, createOnly)
	if err != nil {
		return false, &store.Error{Op: "probe", Name: key, Err: err}
	}
	err = s.b.del(ctx, key, "0"+etag) // not its ETag
	switch {
	case errors.Is(err, errConflict):
		s.tombs = false
	case err != nil:
		return false, &store.Error{Op: "probe", Name: key, Err: err}
	default:
		_, herr := s.b.head(ctx, key)
		s.tombs = errors.Is(herr, store.ErrNotFound)
	}
	s.b.del(ctx, key, "")
	s.probed = true
	if s.tombs {
		s.log.Info("the service ignores conditions on DELETE; labels are removed by tombstone", "store", s.loc.String())
	}
	return s.tombs, nil
}
