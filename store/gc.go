package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// DefaultGrace is how young an unreachable blob may be and still be kept:
// a writer such as the Theater runtime may be between storing a blob and
// labelling it.
const DefaultGrace = time.Hour

// GCOptions tune a collection.
type GCOptions struct {
	DryRun   bool
	Grace    time.Duration // 0 means DefaultGrace; negative means none
	Progress Progress
	Now      func() time.Time // for tests; nil means time.Now
}

// GCReport says what a collection found and did.
type GCReport struct {
	Blobs     int    `json:"blobs"`
	Reachable int    `json:"reachable"`
	Young     int    `json:"kept_young"`
	Removed   []Hash `json:"removed"`
	Bytes     int64  `json:"bytes"`
	DryRun    bool   `json:"dry_run"`
}

// GC removes blobs that no label reaches, directly or along an actor's
// chain (parent_hash from each <actor-id>:chain-head), unless they are
// younger than the grace period. With DryRun it only reports them.
func (s *Store) GC(ctx context.Context, opts GCOptions) (*GCReport, error) {
	if s.opts.ReadOnly && !opts.DryRun {
		return nil, &Error{Op: "gc", Err: errReadOnly}
	}
	grace := opts.Grace
	if grace == 0 {
		grace = DefaultGrace
	}
	now := time.Now
	if opts.Now != nil {
		now = opts.Now
	}
	reach, err := s.reachable(ctx)
	if err != nil {
		return nil, err
	}
	rep := &GCReport{DryRun: opts.DryRun, Removed: []Hash{}}
	cutoff := now().Add(-grace)
	var candidates []Hash
	err = s.scanData(ctx, func(h Hash, de os.DirEntry) error {
		rep.Blobs++
		if opts.Progress != nil && rep.Blobs%1024 == 0 {
			opts.Progress(rep.Blobs, 0)
		}
		if reach[h] {
			rep.Reachable++ // of the blobs here: a ref to a missing one is not counted
			return nil
		}
		fi, err := s.data.Lstat(de.Name())
		if err != nil {
			return nil
		}
		if grace > 0 && fi.ModTime().After(cutoff) {
			rep.Young++
			return nil
		}
		candidates = append(candidates, h)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if opts.DryRun {
		for _, h := range candidates {
			if bi, err := s.Stat(ctx, h); err == nil {
				rep.Bytes += bi.Size
			}
		}
		rep.Removed = candidates
		return rep, nil
	}
	err = s.sweep(ctx, candidates, cutoff, grace > 0, rep)
	return rep, err
}

// reachable marks every label ref and every event along every chain.
func (s *Store) reachable(ctx context.Context) (map[Hash]bool, error) {
	labels, err := s.ListLabels(ctx)
	if err != nil {
		return nil, err
	}
	reach := map[Hash]bool{}
	walked := map[Hash]bool{} // events whose ancestors are marked
	for _, name := range labels {
		refs, err := s.GetByLabel(ctx, name)
		if errors.Is(err, ErrNotFound) {
			continue // removed since listed
		}
		if err != nil {
			// Its refs are unknown, so any blob might be reachable.
			return nil, &Error{Op: "gc", Name: name, Err: fmt.Errorf("cannot read label, collecting nothing: %w", err)}
		}
		for _, h := range refs {
			reach[h] = true
		}
		id, ok := strings.CutSuffix(name, ":chain-head")
		if !ok || len(refs) == 0 {
			continue
		}
		// A marked event is not proof that its ancestors are: a label
		// may name an event in the middle of a chain. Stop only at an
		// event already walked (which also ends a cycle).
		for h := refs[len(refs)-1]; !walked[h]; {
			walked[h] = true
			b, err := s.Get(ctx, h)
			if err != nil {
				if !errors.Is(err, ErrNotFound) {
					s.log.Warn("gc: chain walk ends", "actor", id, "event", h.String(), "err", err)
				}
				break
			}
			ev, err := ParseChainEvent(b)
			if err != nil || ev.Parent == nil {
				break
			}
			h = *ev.Parent
			reach[h] = true
		}
	}
	return reach, nil
}

// sweep deletes the candidates on the owner, checking each once more
// there: a label may have come to name it, or it may have been stored
// again (which refreshes its mtime) since the scan.
func (s *Store) sweep(ctx context.Context, candidates []Hash, cutoff time.Time, useGrace bool, rep *GCReport) error {
	_, err := call(ctx, s, func() (struct{}, error) {
		labelled := map[Hash]bool{}
		if err := s.eachLabelRef(func(h Hash) { labelled[h] = true }); err != nil {
			return struct{}{}, err
		}
		for _, h := range candidates {
			if labelled[h] {
				continue
			}
			fi, err := s.data.Lstat(h.String())
			if err != nil || (useGrace && fi.ModTime().After(cutoff)) {
				continue
			}
			if err := s.data.Remove(h.String()); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return struct{}{}, blobErr(h, err)
			}
			s.verdicts.forget(h)
			rep.Removed = append(rep.Removed, h)
			rep.Bytes += fi.Size()
		}
		if len(rep.Removed) > 0 {
			return struct{}{}, s.syncData()
		}
		return struct{}{}, nil
	})
	return err
}

// eachLabelRef calls fn for every ref of every label, on the owner.
func (s *Store) eachLabelRef(fn func(Hash)) error {
	return fs.WalkDir(s.labels.FS(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		refs, _, err := s.readLabel(p)
		if err != nil {
			return nil
		}
		for _, h := range refs {
			fn(h)
		}
		return nil
	})
}
