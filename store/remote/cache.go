package remote

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// blobCache keeps verified copies of blobs in a local directory, at most
// max bytes of them, dropping the least recently opened first. Blobs
// never change, so a copy never needs invalidating. A file dropped while
// open stays readable through its descriptor until closed.
type blobCache struct {
	dir  string
	max  int64
	lock *os.File // flocked while the cache is in use

	mu      sync.Mutex
	lru     *list.List // of *cached; front: most recently opened
	byHash  map[store.Hash]*list.Element
	total   int64
	loading map[store.Hash]*loading
}

type cached struct {
	h        store.Hash
	size     int64
	verified bool // hashed since this process took it: not one found at start
	touched  bool // its file's atime says it was opened by this process
}

// loading is a download in progress, which other openers wait for.
type loading struct {
	done chan struct{}
	err  error
}

// openCache opens the cache in dir, clearing what a crash left half
// written and taking the copies already there, oldest dropped first.
func openCache(dir string, max int64) (*blobCache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		return nil, fmt.Errorf("blob cache %s is in use by another process (give each mount a cache of its own)", dir)
	}
	c := &blobCache{dir: dir, max: max, lock: lock, lru: list.New(), byHash: map[store.Hash]*list.Element{}, loading: map[store.Hash]*loading{}}
	ents, err := os.ReadDir(dir)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("blob cache: %w", err)
	}
	type found struct {
		h    store.Hash
		size int64
		used time.Time
	}
	var all []found
	for _, e := range ents {
		if e.Name() == ".lock" {
			continue
		}
		h, err := store.ParseHash(e.Name())
		if err != nil || !e.Type().IsRegular() {
			os.RemoveAll(filepath.Join(dir, e.Name())) // a download cut short, or a stranger
			continue
		}
		if fi, err := e.Info(); err == nil {
			used := fi.ModTime()
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				used = time.Unix(st.Atim.Unix()) // open sets it
			}
			all = append(all, found{h, fi.Size(), used})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].used.After(all[j].used) })
	for _, f := range all {
		c.byHash[f.h] = c.lru.PushBack(&cached{h: f.h, size: f.size})
		c.total += f.size
	}
	c.mu.Lock()
	c.evict()
	c.mu.Unlock()
	return c, nil
}

func (c *blobCache) path(h store.Hash) string { return filepath.Join(c.dir, h.String()) }

// open returns the cached copy of h, fetching it with fetch first if there
// is none. fetch writes the blob's content to w; open verifies it.
func (c *blobCache) open(ctx context.Context, h store.Hash, fetch func(ctx context.Context, w io.Writer) (time.Time, error)) (*os.File, error) {
	for {
		c.mu.Lock()
		if el, ok := c.byHash[h]; ok {
			c.lru.MoveToFront(el)
			e := el.Value.(*cached)
			verified, touched := e.verified, e.touched
			e.touched = true
			c.mu.Unlock()
			f, err := os.Open(c.path(h))
			if err == nil && !verified {
				// Found at start: a crash may have torn it since it was
				// verified. Hashed once, then trusted.
				if err = checkFile(f, h); err == nil {
					c.mu.Lock()
					e.verified = true
					c.mu.Unlock()
				} else {
					f.Close()
				}
			}
			if err == nil {
				if !touched {
					// Recency for the next start, which orders the copies
					// it finds by atime; once a process is enough.
					os.Chtimes(c.path(h), time.Now(), time.Time{})
				}
				return f, nil
			}
			c.drop(h) // removed behind our back, or torn: fetch it again
			continue
		}
		if l, ok := c.loading[h]; ok {
			c.mu.Unlock()
			select {
			case <-l.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			if l.err != nil && !errors.Is(l.err, context.Canceled) && !errors.Is(l.err, context.DeadlineExceeded) {
				return nil, l.err
			}
			continue // fetched, or the fetcher gave up for itself: again
		}
		l := &loading{done: make(chan struct{})}
		c.loading[h] = l
		c.mu.Unlock()
		f, size, err := c.fetch(ctx, h, fetch)
		c.mu.Lock()
		delete(c.loading, h)
		if err == nil {
			el := c.lru.PushFront(&cached{h: h, size: size, verified: true})
			c.byHash[h] = el
			c.total += size
			c.evict()
		}
		c.mu.Unlock()
		l.err = err
		close(l.done)
		return f, err
	}
}

// checkFile hashes an open copy of h and rewinds it.
func checkFile(f *os.File, h store.Hash) error {
	sum, _, err := store.HashReader(f)
	if err == nil && sum != h {
		err = fmt.Errorf("%w: cached copy does not hash to its name", store.ErrCorrupt)
	}
	if err == nil {
		_, err = f.Seek(0, io.SeekStart)
	}
	return err
}

// fetch downloads h into a temp file, verifies it, and names it.
func (c *blobCache) fetch(ctx context.Context, h store.Hash, fetch func(context.Context, io.Writer) (time.Time, error)) (*os.File, int64, error) {
	tmp, err := os.CreateTemp(c.dir, ".fetch-*")
	if err != nil {
		return nil, 0, blobErr(h, fmt.Errorf("blob cache: %w", err))
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	hr := store.NewHasher()
	mod, err := fetch(ctx, io.MultiWriter(tmp, hr))
	if err != nil {
		return nil, 0, err
	}
	sum, err := hr.Sum()
	if err != nil || sum != h {
		return nil, 0, blobErr(h, fmt.Errorf("%w: content does not hash to its name", store.ErrCorrupt))
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return nil, 0, blobErr(h, err)
	}
	if !mod.IsZero() {
		os.Chtimes(tmp.Name(), time.Now(), mod)
	}
	// Durable before it is named: a copy found under a blob's name
	// after a crash is whole, or is caught by checkFile.
	if err := tmp.Sync(); err != nil {
		return nil, 0, blobErr(h, fmt.Errorf("blob cache: %w", err))
	}
	if err := os.Rename(tmp.Name(), c.path(h)); err != nil {
		return nil, 0, blobErr(h, fmt.Errorf("blob cache: %w", err))
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return nil, 0, blobErr(h, err)
	}
	keep = true
	return tmp, size, nil
}

// adopt takes the file at path, content known to hash to h, as the cached
// copy of h, and reports whether it did (not if it had one already).
func (c *blobCache) adopt(h store.Hash, path string, size int64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byHash[h]; ok || c.loading[h] != nil {
		return false
	}
	if err := os.Rename(path, c.path(h)); err != nil {
		return false
	}
	el := c.lru.PushFront(&cached{h: h, size: size, verified: true})
	c.byHash[h] = el
	c.total += size
	c.evict()
	return true
}

// evict drops the least recently opened copies until the cache is within
// its bound. The copy just opened is at the front: it goes last, and goes
// too if it alone is over the bound (it is served from its open file).
// c.mu is held.
func (c *blobCache) evict() {
	for c.total > c.max && c.lru.Len() > 0 {
		c.remove(c.lru.Back())
	}
}

func (c *blobCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*cached)
	delete(c.byHash, e.h)
	c.total -= e.size
	os.Remove(c.path(e.h))
}

func (c *blobCache) drop(h store.Hash) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byHash[h]; ok {
		c.remove(el)
	}
}

// stat returns a cached copy's size and time, if there is one.
func (c *blobCache) stat(h store.Hash) (os.FileInfo, bool) {
	c.mu.Lock()
	_, ok := c.byHash[h]
	c.mu.Unlock()
	if !ok {
		return nil, false
	}
	fi, err := os.Stat(c.path(h))
	return fi, err == nil
}

// size is the bytes the cache holds.
func (c *blobCache) size() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// close lets another process use the cache.
func (c *blobCache) close() { c.lock.Close() }
