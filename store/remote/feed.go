package remote

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// maxPending bounds the changes a feed holds for its reader; past it the
// feed reports an overflow instead.
const maxPending = 4096

// feed is the change feed of a bucket's labels. Blobs never change, so
// only labels are watched.
type feed struct {
	ready  chan struct{}
	done   <-chan struct{}
	cancel context.CancelFunc

	mu       sync.Mutex
	pending  map[string]struct{}
	overflow bool
}

var _ store.Feed = (*feed)(nil)

// Feed starts watching the labels for changes made anywhere.
func (s *Store) Feed() (store.Feed, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{ready: make(chan struct{}, 1), cancel: cancel, pending: map[string]struct{}{}}
	done, err := s.labels.changes(ctx, s.poll, f.note)
	if err != nil {
		cancel()
		return nil, &store.Error{Op: "watch", Name: s.loc.String(), Err: err}
	}
	f.done = done
	return f, nil
}

func (f *feed) note(names []string) {
	f.mu.Lock()
	if names == nil {
		f.overflow = true
	}
	for _, n := range names {
		if len(f.pending) >= maxPending {
			f.overflow = true
			break
		}
		// A namespace's marker names the namespace.
		if n = strings.TrimRight(n, "/"); n != "" {
			f.pending[n] = struct{}{}
		}
	}
	f.mu.Unlock()
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

func (f *feed) Ready() <-chan struct{} { return f.ready }
func (f *feed) Done() <-chan struct{}  { return f.done }

func (f *feed) Take() ([]store.Change, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.overflow {
		f.overflow = false
		clear(f.pending)
		return nil, true
	}
	out := make([]store.Change, 0, len(f.pending))
	for n := range f.pending {
		out = append(out, store.Change{Kind: store.LabelChanged, Name: n})
	}
	clear(f.pending)
	return out, false
}

func (f *feed) Close() error {
	f.cancel()
	<-f.done
	return nil
}

// changes polls: it lists every label with its ETag every interval and
// reports those whose ETag changed, appeared or went since the last list.
func (l *s3Labels) changes(ctx context.Context, interval time.Duration, fn func([]string)) (<-chan struct{}, error) {
	seen, err := l.versions(ctx)
	if err != nil {
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			now, err := l.versions(ctx)
			if err != nil {
				if ctx.Err() == nil {
					l.log.Warn("cannot list labels for changes; trying again", "err", err)
				}
				continue
			}
			var changed []string
			for name, v := range now {
				if seen[name] != v {
					changed = append(changed, name)
				}
			}
			for name := range seen {
				if _, ok := now[name]; !ok {
					changed = append(changed, name)
				}
			}
			seen = now
			if len(changed) > 0 {
				fn(changed)
			}
		}
	}()
	return done, nil
}

// versions lists every label (and namespace marker) with its ETag.
func (l *s3Labels) versions(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := l.list(ctx, "", func(name, version string) error {
		out[name] = version
		return nil
	})
	return out, err
}
