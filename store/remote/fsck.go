package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/theater-storefs/theater-storefs/store"
)

// fsckJobs is how many blobs fsck reads at once: each read is a round
// trip before it is a transfer.
const fsckJobs = 8

// Verify (fsck) reads every blob of the bucket through, checking that it
// hashes to its name, and checks every label: lines that are not hashes,
// refs to missing blobs. It reports what it finds as the local store's
// Verify does; a failure to reach the service ends it with an error.
func (s *Store) Verify(ctx context.Context, progress store.Progress) (*store.FsckReport, error) {
	rep := &store.FsckReport{Problems: []store.Problem{}}
	hashes, err := s.ListAllContent(ctx)
	if err != nil {
		return nil, err
	}
	names, err := s.ListLabels(ctx)
	if err != nil {
		return nil, err
	}
	rep.Blobs, rep.Labels = len(hashes), len(names)
	total := len(hashes) + len(names)
	var (
		mu       sync.Mutex
		done     atomic.Int64
		firstErr error
		wg       sync.WaitGroup
	)
	work := make(chan store.Hash)
	for range fsckJobs {
		wg.Go(func() {
			for h := range work {
				p, err := s.checkBlob(ctx, h)
				mu.Lock()
				if p != nil {
					rep.Problems = append(rep.Problems, *p)
				}
				if err != nil && firstErr == nil {
					firstErr = err
				}
				if progress != nil { // one call at a time
					progress(int(done.Add(1)), total)
				}
				mu.Unlock()
			}
		})
	}
	for _, h := range hashes {
		work <- h
		mu.Lock()
		stop := firstErr != nil
		mu.Unlock()
		if stop || ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	if firstErr != nil {
		return rep, firstErr
	}
	slices.SortFunc(hashes, func(a, b store.Hash) int { return bytes.Compare(a[:], b[:]) })
	for _, name := range names {
		ps, err := s.checkLabel(ctx, name, hashes)
		if err != nil {
			return rep, err
		}
		rep.Problems = append(rep.Problems, ps...)
		if progress != nil {
			progress(int(done.Add(1)), total)
		}
	}
	return rep, nil
}

// checkBlob reads a blob through. A blob that does not hash to its name is
// a problem; one gone since it was listed is not; a service that fails is
// an error.
func (s *Store) checkBlob(ctx context.Context, h store.Hash) (*store.Problem, error) {
	r, _, err := s.OpenBlob(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	_, err = io.CopyBuffer(io.Discard, r, *buf)
	if errors.Is(err, store.ErrCorrupt) {
		return &store.Problem{Kind: "corrupt-blob", Name: h.String(), Detail: "content does not hash to its name"}, nil
	}
	return nil, err
}

// checkLabel checks a label's lines, and that its refs are among blobs
// (sorted), the blobs listed.
func (s *Store) checkLabel(ctx context.Context, name string, blobs []store.Hash) ([]store.Problem, error) {
	cur, err := s.readLabel(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil // removed since listed
	}
	if errors.Is(err, store.ErrCorrupt) {
		return []store.Problem{{Kind: "bad-label", Name: name, Detail: err.Error()}}, nil
	}
	if err != nil {
		return nil, err
	}
	var out []store.Problem
	switch {
	case cur.bad == 1:
		out = append(out, store.Problem{Kind: "bad-label", Name: name, Detail: "1 line that is not a hash"})
	case cur.bad > 1:
		out = append(out, store.Problem{Kind: "bad-label", Name: name, Detail: fmt.Sprintf("%d lines that are not hashes", cur.bad)})
	}
	for _, h := range cur.refs {
		if _, listed := slices.BinarySearchFunc(blobs, h, func(a, b store.Hash) int { return bytes.Compare(a[:], b[:]) }); listed {
			continue
		}
		// Not listed: missing, or stored since the listing.
		ok, err := s.Exists(ctx, h)
		if err != nil {
			return nil, err
		}
		if !ok {
			out = append(out, store.Problem{Kind: "missing-blob", Name: name, Detail: "points to missing blob " + h.String()})
		}
	}
	return out, nil
}
