package store

import (
	"bytes"
	"context"
	"sync"
)

// CompareHashes orders hashes by their bytes, as their names sort; for
// slices.SortFunc and slices.BinarySearchFunc.
func CompareHashes(a, b Hash) int { return bytes.Compare(a[:], b[:]) }

// EachHash calls fn for every hash, jobs calls at a time (1 if jobs < 1),
// until one fails: it returns the first error, the calls not yet started
// are not made, and the ctx given to the others is canceled. fn's calls
// run concurrently; what they share, they lock.
func EachHash(ctx context.Context, hashes []Hash, jobs int, fn func(ctx context.Context, h Hash) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	work := make(chan Hash)
	for range min(max(jobs, 1), max(len(hashes), 1)) {
		wg.Go(func() {
			for h := range work {
				if err := fn(ctx, h); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		})
	}
feed:
	for _, h := range hashes {
		select {
		case work <- h:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}
