package remote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/theater-storefs/theater-storefs/store"
)

// A bucket has no directories: a namespace "a" exists while a key starts
// with labels/a/, the marker labels/a/ included, which mkdir makes and the
// removal of a namespace's last label leaves, so that a namespace stays
// until rmdir as a directory does.

// StatLabel returns a label's refs and when it last changed.
func (s *Store) StatLabel(ctx context.Context, name string) (store.LabelInfo, error) {
	if err := store.ValidateLabel(name); err != nil {
		return store.LabelInfo{}, err
	}
	if err := s.open(); err != nil {
		return store.LabelInfo{}, err
	}
	cur, err := s.readLabel(ctx, name)
	if err != nil {
		return store.LabelInfo{}, err
	}
	return cur.info(), nil
}

// IsNamespace reports whether name is a label namespace; ErrNotFound if
// it is neither a namespace nor a label.
func (s *Store) IsNamespace(ctx context.Context, name string) (bool, error) {
	if err := store.ValidateLabel(name); err != nil {
		return false, err
	}
	if err := s.open(); err != nil {
		return false, err
	}
	ns, err := s.isNamespace(ctx, name)
	if err != nil || ns {
		return ns, err
	}
	if _, _, _, err := s.labels.read(ctx, name); err != nil {
		return false, labelErr(name, err)
	}
	return false, nil
}

// ReadNamespace lists the labels and namespaces right under ns ("" for
// the top), sorted by name.
func (s *Store) ReadNamespace(ctx context.Context, ns string) ([]store.LabelEntry, error) {
	dir := ""
	if ns != "" {
		if err := store.ValidateLabel(ns); err != nil {
			return nil, err
		}
		dir = ns + "/"
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	var out []store.LabelEntry
	err := s.labels.readDir(ctx, dir, func(name string, isNS bool) error {
		if store.ValidateLabel(name) != nil || strings.Contains(name, "/") {
			s.log.Warn("skipping label key that is not a label name", "key", dir+name)
			return nil
		}
		out = append(out, store.LabelEntry{Name: name, IsNamespace: isNS})
		return nil
	})
	if err != nil {
		return nil, labelErr(ns, err)
	}
	if len(out) == 0 && ns != "" {
		// An empty listing is an empty namespace only if its marker is
		// there.
		if found, err := s.isNamespace(ctx, ns); err != nil || !found {
			return nil, s.notNamespace(ctx, ns)
		}
	}
	slices.SortFunc(out, func(a, b store.LabelEntry) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// notNamespace is the error for a name that is no namespace: a label's, or
// nothing's.
func (s *Store) notNamespace(ctx context.Context, name string) error {
	if _, _, _, err := s.labels.read(ctx, name); err == nil {
		return labelErr(name, store.ErrNotNamespace)
	}
	return labelErr(name, store.ErrNotFound)
}

// MakeNamespace makes an empty namespace (mkdir in by-label/).
func (s *Store) MakeNamespace(ctx context.Context, name string) error {
	if err := store.ValidateLabel(name); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	if _, _, _, err := s.labels.read(ctx, name); err == nil {
		return labelErr(name, fmt.Errorf("label %w", store.ErrExists))
	} else if !errors.Is(err, store.ErrNotFound) {
		return labelErr(name, err)
	}
	if ns, err := s.isNamespace(ctx, name); err != nil {
		return labelErr(name, err)
	} else if ns {
		return labelErr(name, fmt.Errorf("namespace %w", store.ErrExists))
	}
	if err := s.checkNewLabel(ctx, name); err != nil {
		return err
	}
	if err := s.labels.mark(ctx, name); err != nil {
		return labelErr(name, err)
	}
	return nil
}

// RemoveNamespace removes an empty namespace.
func (s *Store) RemoveNamespace(ctx context.Context, name string) error {
	if err := store.ValidateLabel(name); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	ns, err := s.isNamespace(ctx, name)
	if err != nil {
		return labelErr(name, err)
	}
	if !ns {
		return s.notNamespace(ctx, name)
	}
	if err := s.labels.clear(ctx, name+"/"); err != nil {
		return labelErr(name, err)
	}
	return nil
}

// RenameLabel moves a label to a new name, replacing a label there. A
// bucket cannot move a namespace in place: that is ErrCrossDevice, on
// which mv copies and removes instead. The move is a write of the new name
// and a compare-and-swap removal of the old: should the old label change
// in between, the move is made again with what it holds now.
func (s *Store) RenameLabel(ctx context.Context, from, to string) error {
	for _, n := range []string{from, to} {
		if err := store.ValidateLabel(n); err != nil {
			return err
		}
	}
	if err := s.writable(); err != nil {
		return err
	}
	if from == to {
		_, err := s.StatLabel(ctx, from)
		return err
	}
	if strings.HasPrefix(to, from+"/") {
		return labelErr(to, fmt.Errorf("%w: cannot move a label under itself", store.ErrInvalidLabel))
	}
	r := retrier{s: s}
	for {
		data, version, _, err := s.labels.read(ctx, from)
		if errors.Is(err, store.ErrNotFound) {
			if ns, nerr := s.isNamespace(ctx, from); nerr == nil && ns {
				return labelErr(from, fmt.Errorf("%w: a namespace in a bucket is moved by copying it", store.ErrCrossDevice))
			}
			if r.maybe {
				return nil // moved by the attempt whose answer was lost
			}
			return labelErr(from, store.ErrNotFound)
		}
		if err != nil {
			return labelErr(from, err)
		}
		if ns, err := s.isNamespace(ctx, to); err != nil {
			return labelErr(to, err)
		} else if ns {
			return labelErr(to, store.ErrIsNamespace)
		}
		// What to holds, to be put back should from change meanwhile.
		old, toVersion, _, err := s.labels.read(ctx, to)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return labelErr(to, err)
		}
		if toVersion == createOnly {
			if err := s.checkNewLabel(ctx, to); err != nil {
				return err
			}
		}
		newVersion, err := s.labels.write(ctx, to, data, toVersion)
		if err == nil {
			err = s.labels.remove(ctx, from, version)
			if errors.Is(err, errMaybe) {
				// Removed or not: from tells. Absent, it was removed
				// (by us, or by another as we moved it); unchanged, it
				// is removed again; changed, the move is taken back.
				_, now, _, rerr := s.labels.read(ctx, from)
				switch {
				case errors.Is(rerr, store.ErrNotFound):
					err = nil
				case rerr == nil && now == version:
					if err := r.again(ctx, errMaybe); err != nil {
						return labelErr(from, err)
					}
					continue
				default:
					err = errConflict
				}
			}
			if err == nil {
				s.keepNamespace(ctx, from)
				return nil
			}
			// from changed or went: take the move back, unless to
			// changed since, and try again.
			var undo error
			if old != nil {
				_, undo = s.labels.write(ctx, to, old, newVersion)
			} else {
				undo = s.labels.remove(ctx, to, newVersion)
			}
			if undo != nil && !errors.Is(undo, errConflict) {
				return labelErr(to, fmt.Errorf("moving %q here failed (%v), and so did taking it back: %w", from, err, undo))
			}
			if !errors.Is(err, errConflict) && !errors.Is(err, errMaybe) {
				return labelErr(from, err)
			}
		}
		if err := r.again(ctx, err); err != nil {
			return labelErr(to, err)
		}
	}
}
