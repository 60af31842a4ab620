package remote

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"

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
	var mu sync.Mutex // rep, and one progress call at a time
	done := 0
	err = store.EachHash(ctx, hashes, fsckJobs, func(ctx context.Context, h store.Hash) error {
		p, err := s.checkBlob(ctx, h)
		mu.Lock()
		defer mu.Unlock()
		if p != nil {
			rep.Problems = append(rep.Problems, *p)
		}
		if done++; progress != nil {
			progress(done, total)
		}
		return err
	})
	if err != nil {
		return rep, err
	}
	slices.SortFunc(hashes, store.CompareHashes)
	for _, name := range names {
		ps, err := s.checkLabel(ctx, name, hashes)
		if err != nil {
			return rep, err
		}
		rep.Problems = append(rep.Problems, ps...)
		if done++; progress != nil {
			progress(done, total)
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
	if cur.bad > 0 {
		out = append(out, store.Problem{Kind: "bad-label", Name: name, Detail: store.NotHashes(cur.bad)})
	}
	for _, h := range cur.refs {
		if _, listed := slices.BinarySearchFunc(blobs, h, store.CompareHashes); listed {
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
