package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// CopyOptions tune Copy.
type CopyOptions struct {
	// Jobs is how many blobs are copied at once; 0 means 8. A bucket
	// answers each request in a round trip, so a few in flight keep it
	// busy.
	Jobs int
	// Progress is told how many of the blobs to copy are done, by one
	// call at a time.
	Progress Progress
}

// CopyReport says what Copy did.
type CopyReport struct {
	Blobs        int   `json:"blobs"`         // blobs in the source
	Copied       int   `json:"copied"`        // of them, copied now
	Bytes        int64 `json:"bytes"`         // the bytes copied
	Labels       int   `json:"labels"`        // labels in the source
	LabelsCopied int   `json:"labels_copied"` // of them, changed at the destination
	// Dropped names the labels of the destination that held refs to
	// blobs the source does not have (appended at the destination), which
	// they no longer hold. The blobs stay.
	Dropped []string `json:"labels_dropped_refs"`
}

// Copy brings every blob and label of src into dst: blobs dst lacks are
// copied (each verified on the way: it must hash to its name), then every
// label of src is made to hold at dst what it holds in src, as a mirror
// does: refs a label held only at dst are dropped from it (those to blobs
// only dst has are reported in Dropped; the blobs stay). Labels come last, so no label at dst points
// at a blob not yet there. Blobs dst has already are left alone, so a copy
// that was cut short resumes where it stopped. Labels and blobs only dst
// has are kept.
func Copy(ctx context.Context, src, dst Backend, opts CopyOptions) (*CopyReport, error) {
	rep := &CopyReport{}
	have, err := dst.ListAllContent(ctx)
	if err != nil {
		return rep, err
	}
	all, err := src.ListAllContent(ctx)
	if err != nil {
		return rep, err
	}
	rep.Blobs = len(all)
	slices.SortFunc(have, CompareHashes)
	var todo []Hash
	for _, h := range all {
		if _, found := slices.BinarySearchFunc(have, h, CompareHashes); !found {
			todo = append(todo, h)
		}
	}
	if err := copyBlobs(ctx, src, dst, todo, opts, rep); err != nil {
		return rep, err
	}
	names, err := src.ListLabels(ctx)
	if err != nil {
		return rep, err
	}
	rep.Labels = len(names)
	slices.SortFunc(all, CompareHashes)
	for _, name := range names {
		changed, dropped, err := copyLabel(ctx, src, dst, name, all)
		if err != nil {
			return rep, err
		}
		if changed {
			rep.LabelsCopied++
		}
		if dropped {
			rep.Dropped = append(rep.Dropped, name)
		}
	}
	return rep, nil
}

func copyBlobs(ctx context.Context, src, dst Backend, todo []Hash, opts CopyOptions, rep *CopyReport) error {
	jobs := opts.Jobs
	if jobs <= 0 {
		jobs = 8
	}
	var mu sync.Mutex // rep, and one progress call at a time
	done := 0
	return EachHash(ctx, todo, jobs, func(ctx context.Context, h Hash) error {
		n, copied, err := copyBlob(ctx, src, dst, h)
		mu.Lock()
		defer mu.Unlock()
		if copied {
			rep.Copied++
			rep.Bytes += n
		}
		if done++; opts.Progress != nil {
			opts.Progress(done, len(todo))
		}
		return err
	})
}

// copyBlob copies one blob, streamed: the source verifies it as it is
// read, and the destination names it by the hash of what arrived. A blob
// removed from the source since it was listed is not copied.
func copyBlob(ctx context.Context, src, dst Backend, h Hash) (n int64, copied bool, err error) {
	r, _, err := src.OpenBlob(ctx, h)
	if errors.Is(err, ErrNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer r.Close()
	got, n, err := dst.PutLabeled(ctx, r, "", LabelNone)
	if err != nil {
		return n, false, fmt.Errorf("copying blob %s: %w", h, err)
	}
	if got != h {
		return n, false, blobErr(h, fmt.Errorf("%w: content hashes to %s", ErrCorrupt, got))
	}
	return n, true, nil
}

// copyLabel makes dst's label hold src's refs, in order, and reports
// whether it had to change it, and whether it dropped a ref to a blob src
// does not have (srcBlobs, sorted, lists those it has).
func copyLabel(ctx context.Context, src, dst Backend, name string, srcBlobs []Hash) (changed, dropped bool, err error) {
	want, err := src.GetByLabel(ctx, name)
	if errors.Is(err, ErrNotFound) || (err == nil && len(want) == 0) {
		return false, false, nil // removed since listed
	}
	if err != nil {
		return false, false, err
	}
	got, err := dst.GetByLabel(ctx, name)
	if err != nil && !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) {
		return false, false, err
	}
	if err == nil && slices.Equal(got, want) {
		return false, false, nil
	}
	if err := dst.SetLabel(ctx, name, want); err != nil {
		return false, false, err
	}
	// A ref dropped to a blob that src has too is src's own history (a
	// replaced chain-head); one to a blob only dst has was added at dst,
	// and that blob now hangs on no label of this one.
	for _, h := range got {
		if slices.Contains(want, h) {
			continue
		}
		if _, ok := slices.BinarySearchFunc(srcBlobs, h, CompareHashes); !ok {
			return true, true, nil
		}
	}
	return true, false, nil
}
