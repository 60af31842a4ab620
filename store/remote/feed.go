package remote

import (
	"context"
	"sync"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// maxPending bounds the changes a feed holds for its reader; past it the
// feed reports an overflow instead.
const maxPending = 4096

// feed finds labels changed by others (other nodes, the CLI) by listing
// labels/ every poll interval and comparing each label's ETag with the
// last listing's. Blobs never change, so only labels are watched.
type feed struct {
	s      *Store
	ready  chan struct{}
	done   chan struct{}
	cancel context.CancelFunc

	mu       sync.Mutex
	pending  map[string]struct{}
	overflow bool
}

var _ store.Feed = (*feed)(nil)

// Feed starts watching the labels. The first listing is made before it
// returns, so that changes after it are seen.
func (s *Store) Feed() (store.Feed, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	seen, err := s.labelVersions(context.Background())
	if err != nil {
		return nil, &store.Error{Op: "watch", Name: s.loc.String(), Err: err}
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &feed{s: s, ready: make(chan struct{}, 1), done: make(chan struct{}), cancel: cancel, pending: map[string]struct{}{}}
	go f.loop(ctx, seen)
	return f, nil
}

// labelVersions lists every label (and namespace marker) with its ETag.
func (s *Store) labelVersions(ctx context.Context) (map[string]string, error) {
	out := map[string]string{}
	err := s.labels.list(ctx, "", func(name, version string) error {
		out[name] = version
		return nil
	})
	return out, err
}

func (f *feed) loop(ctx context.Context, seen map[string]string) {
	defer close(f.done)
	t := time.NewTicker(f.s.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now, err := f.s.labelVersions(ctx)
		if err != nil {
			if ctx.Err() == nil {
				f.s.log.Warn("cannot list labels for changes; trying again", "err", err)
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
		f.note(changed)
	}
}

func (f *feed) note(names []string) {
	if len(names) == 0 {
		return
	}
	f.mu.Lock()
	for _, n := range names {
		if len(f.pending) >= maxPending {
			f.overflow = true
			break
		}
		if n = trimMarker(n); n != "" {
			f.pending[n] = struct{}{}
		}
	}
	f.mu.Unlock()
	select {
	case f.ready <- struct{}{}:
	default:
	}
}

// trimMarker names a namespace by its marker's name.
func trimMarker(name string) string {
	for len(name) > 0 && name[len(name)-1] == '/' {
		name = name[:len(name)-1]
	}
	return name
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
