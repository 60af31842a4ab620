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
// service does not refuse a DELETE whose If-Match fails. It asks the
// service once, the first time a label is removed: a probe object is
// deleted on a condition that does not hold, which must be refused.
func (l *s3Labels) tombstones(ctx context.Context) (bool, error) {
	l.probeMu.Lock()
	defer l.probeMu.Unlock()
	if l.probed {
		return l.tombs, nil
	}
	if l.forceTombs {
		l.probed, l.tombs = true, true
		return true, nil
	}
	key := fmt.Sprintf("%sprobe-%016x", probeDir, rand.Uint64())
	etag, err := l.b.put(ctx, key, bytes.NewReader([]byte("probe")), 5, createOnly, nil)
	if err != nil {
		return false, &store.Error{Op: "probe", Name: key, Err: err}
	}
	err = l.b.del(ctx, key, "0"+etag) // not its ETag
	switch {
	case errors.Is(err, errConflict):
		l.tombs = false // refused, as it should be
	case err != nil:
		return false, &store.Error{Op: "probe", Name: key, Err: err}
	default:
		// Deleted anyway, or not deleted but answered as if it were:
		// either way a removal's outcome could not be trusted.
		l.tombs = true
	}
	l.b.del(ctx, key, "")
	l.probed = true
	if l.tombs {
		l.log.Info("the service ignores conditions on DELETE; labels are removed by tombstone", "bucket", l.b.name)
	}
	return l.tombs, nil
}
