package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// labelStore keeps label files by name and changes them only by
// compare-and-swap on a version: the ETag of an object, the mod revision
// of an etcd key.
type labelStore interface {
	// read returns a label file, its version and when it was written;
	// ErrNotFound if absent. A tombstone (see Store.removeLabel) is
	// absent, but has a version.
	read(ctx context.Context, name string) (data []byte, version string, mod time.Time, err error)
	// write stores a label file if its version is still version
	// (createOnly: if there is none), else errConflict, and returns its
	// new version.
	write(ctx context.Context, name string, data []byte, version string) (string, error)
	// remove deletes a label file if its version is still version.
	remove(ctx context.Context, name, version string) error
	// changes starts calling fn, from a goroutine of its own, with the
	// names of labels changed from now on (polled every interval, or as
	// they change), until ctx ends; then done closes. nil names mean an
	// unknown set of them.
	changes(ctx context.Context, interval time.Duration, fn func(names []string)) (done <-chan struct{}, err error)
	close() error
	// list calls fn for every label under dir ("" or ending in "/") with
	// its version, sorted, until fn returns errStop. Namespace markers
	// (names ending in "/") are listed too, tombstones not.
	list(ctx context.Context, dir string, fn func(name, version string) error) error
	// readDir lists the labels and namespaces right under dir.
	readDir(ctx context.Context, dir string, fn func(name string, isNamespace bool) error) error
	// clear removes the marker of namespace dir (ending in "/") if no
	// label or namespace is in it; else ErrNotEmpty.
	clear(ctx context.Context, dir string) error
	// mark makes the marker of an empty namespace.
	mark(ctx context.Context, ns string) error
}

// s3Labels keeps labels as objects labels/<name> beside the blobs.
type s3Labels struct {
	b   *bucket
	log *slog.Logger

	probeMu    sync.Mutex
	probed     bool // tombs is known
	tombs      bool // labels are removed by tombstone (see remove)
	forceTombs bool // for tests: tombstones without asking the service
}

func (l *s3Labels) read(ctx context.Context, name string) ([]byte, string, time.Time, error) {
	body, info, err := l.b.get(ctx, store.LabelsDir+"/"+name, 0, 0)
	if err != nil {
		return nil, "", time.Time{}, err
	}
	defer body.Close()
	if info.size > store.MaxLabelFile {
		return nil, "", time.Time{}, fmt.Errorf("%w: label file is %d bytes, over the %d limit", store.ErrCorrupt, info.size, store.MaxLabelFile)
	}
	data, err := store.ReadLabelFile(body)
	if err != nil {
		if !errors.Is(err, store.ErrCorrupt) {
			err = readErr(ctx, err)
		}
		return nil, "", time.Time{}, err
	}
	if len(data) == 0 {
		// A tombstone. Told by what was read, not by the header: a
		// chunked answer has no length.
		return nil, info.etag, info.mod, store.ErrNotFound
	}
	return data, info.etag, info.mod, nil
}

func (l *s3Labels) write(ctx context.Context, name string, data []byte, version string) (string, error) {
	return l.b.put(ctx, store.LabelsDir+"/"+name, bytes.NewReader(data), int64(len(data)), version, nil)
}

// remove deletes a label at version. Where the service honours a
// condition on DELETE, it deletes the object; where it ignores it (Ceph
// RGW deletes whatever is there), a racing append made after the label
// was read would be deleted with it, so the label is overwritten instead
// with a tombstone, an empty object, by a conditional PUT. Tombstones are
// absent labels to every reader; the next write of the label replaces
// one, on the same condition.
func (l *s3Labels) remove(ctx context.Context, name, version string) error {
	tombs, err := l.tombstones(ctx)
	if err != nil {
		return err
	}
	if tombs {
		_, err := l.b.put(ctx, store.LabelsDir+"/"+name, bytes.NewReader(nil), 0, version, nil)
		return err
	}
	return l.b.del(ctx, store.LabelsDir+"/"+name, version)
}

func (l *s3Labels) close() error { return nil }

func (l *s3Labels) list(ctx context.Context, dir string, fn func(name, version string) error) error {
	return l.b.list(ctx, store.LabelsDir+"/"+dir, 0, func(name string, info objectInfo) error {
		full := dir + name
		if info.size == 0 && !strings.HasSuffix(full, "/") {
			return nil // a tombstone
		}
		return fn(full, info.etag)
	})
}

func (l *s3Labels) readDir(ctx context.Context, dir string, fn func(string, bool) error) error {
	return l.b.listDir(ctx, store.LabelsDir+"/"+dir, func(name string, isDir bool, size int64) error {
		if !isDir && size == 0 {
			return nil // a tombstone
		}
		return fn(name, isDir)
	})
}

func (l *s3Labels) clear(ctx context.Context, dir string) error {
	err := l.b.list(ctx, store.LabelsDir+"/"+dir, 0, func(name string, info objectInfo) error {
		if info.size > 0 || (name != "" && strings.HasSuffix(name, "/")) {
			return store.ErrNotEmpty // a label, or a namespace's marker
		}
		return nil
	})
	if err != nil {
		return err
	}
	// Only the marker goes. The tombstones stay: deleting one would
	// delete a label written over it meanwhile, on a service that
	// ignores conditions on DELETE. Without labels or marker under it,
	// the namespace is gone.
	if err := l.b.del(ctx, store.LabelsDir+"/"+dir, ""); err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	return nil
}

// A namespace's marker is the empty object labels/<ns>/, as a directory
// is shown in a bucket.
func (l *s3Labels) mark(ctx context.Context, ns string) error {
	_, err := l.b.put(ctx, store.LabelsDir+"/"+ns+"/", bytes.NewReader(nil), 0, anyVersion, nil)
	return err
}

func labelErr(name string, err error) error { return &store.Error{Op: "label", Name: name, Err: err} }

// current is a label as read for a change.
type current struct {
	refs    []store.Hash
	bad     int    // lines that are not hashes
	version string // of the object; createOnly when there is none
	absent  bool   // no label: no object, or a tombstone
	mod     time.Time
	retried bool // an earlier attempt of this change may have made it
}

func (c current) exists() bool { return !c.absent }

// errKeep ends a change without writing anything.
var errKeep = errors.New("label unchanged")

// maxAttempts bounds how often a change is retried after losing a race.
const maxAttempts = 64

// change reads a label, asks decide for its next refs, and writes them
// back if nobody changed the label meanwhile; if somebody did, it reads
// and decides again. No refs removes the label. decide returns errKeep to
// write nothing.
func (s *Store) change(ctx context.Context, name string, decide func(cur current) ([]store.Hash, error)) error {
	if err := store.ValidateLabel(name); err != nil {
		return err
	}
	if err := s.writable(); err != nil {
		return err
	}
	r := retrier{s: s}
	for {
		cur, err := s.readLabel(ctx, name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		cur.retried = r.maybe
		next, err := decide(cur)
		if err == errKeep {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case len(next) == 0 && !cur.exists():
			return nil
		case len(next) == 0:
			if err = s.labels.remove(ctx, name, cur.version); err == nil {
				s.keepNamespace(ctx, name)
			}
		default:
			if cur.version == createOnly {
				if err := s.checkNewLabel(ctx, name); err != nil {
					return err
				}
			}
			_, err = s.labels.write(ctx, name, store.FormatLabelFile(next), cur.version)
		}
		if err == nil {
			return nil
		}
		if err := r.again(ctx, err); err != nil {
			return labelErr(name, err)
		}
	}
}

// retrier decides after each attempt of a compare-and-swap change whether
// to make it again: after a lost race (errConflict), or a failure that
// may or may not have made the change (errMaybe), it waits a little, more
// each time, with jitter so that racers do not meet again.
type retrier struct {
	s        *Store
	attempts int
	backoff  time.Duration
	maybe    bool // an attempt may have made the change
}

// again takes a failed attempt's error: after a conflict it waits for the
// next attempt and returns nil; anything else it returns.
func (r *retrier) again(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, errMaybe):
		r.maybe = true
	case !errors.Is(err, errConflict):
		return err
	}
	r.s.conflicts.Add(1)
	if r.attempts++; r.attempts >= maxAttempts {
		return fmt.Errorf("%w: changed by others %d times in a row; giving up", store.ErrUnavailable, maxAttempts)
	}
	if r.backoff == 0 {
		r.backoff = time.Millisecond
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(r.backoff/2 + rand.N(r.backoff)):
	}
	r.backoff = min(2*r.backoff, 200*time.Millisecond)
	return nil
}

// readLabel reads and parses a label. Absent, it is current{} and
// ErrNotFound.
func (s *Store) readLabel(ctx context.Context, name string) (current, error) {
	data, version, mod, err := s.labels.read(ctx, name)
	if err != nil {
		gone := current{version: version, absent: true}
		if errors.Is(err, store.ErrNotFound) {
			if ns, nerr := s.isNamespace(ctx, name); nerr == nil && ns {
				return gone, labelErr(name, store.ErrIsNamespace)
			}
			return gone, labelErr(name, store.ErrNotFound)
		}
		return gone, labelErr(name, err)
	}
	refs, bad := store.ParseLabelFile(data)
	if len(bad) > 0 {
		s.log.Warn("skipping label lines that are not hashes", "label", name, "lines", bad)
	}
	return current{refs: refs, bad: len(bad), version: version, mod: mod}, nil
}

// keepNamespace leaves the marker of the namespace a removed label was in,
// if it was the last one there: a namespace stays until it is removed
// itself, as a directory does (rmdir after rm -r expects it).
func (s *Store) keepNamespace(ctx context.Context, removed string) {
	i := strings.LastIndexByte(removed, '/')
	if i < 0 {
		return
	}
	ns := removed[:i]
	found, err := s.isNamespace(ctx, ns)
	if err == nil && !found {
		err = s.labels.mark(ctx, ns)
	}
	if err != nil {
		s.log.Warn("cannot keep the emptied label namespace", "namespace", ns, "err", err)
	}
}

// isNamespace reports whether labels live under name/.
func (s *Store) isNamespace(ctx context.Context, name string) (bool, error) {
	found := false
	err := s.labels.list(ctx, name+"/", func(string, string) error { found = true; return errStop })
	return found, err
}

// checkNewLabel keeps the local store's shape: a label is not created
// under another label ("a/b" when "a" is one). A bucket would allow it; a
// store directory cannot. (Whether a namespace is at name itself, its
// callers have looked already.)
func (s *Store) checkNewLabel(ctx context.Context, name string) error {
	for i := strings.IndexByte(name, '/'); i >= 0; i = next(name, i) {
		_, _, _, err := s.labels.read(ctx, name[:i])
		if err == nil {
			return labelErr(name, fmt.Errorf("%w: %q", store.ErrNotNamespace, name[:i]))
		}
		if !errors.Is(err, store.ErrNotFound) {
			return labelErr(name, err)
		}
	}
	return nil
}

// next finds the '/' after the one at i, or -1.
func next(s string, i int) int {
	j := strings.IndexByte(s[i+1:], '/')
	if j < 0 {
		return -1
	}
	return i + 1 + j
}

// info is cur as the store package describes a label, for its checks.
func (cur current) info() store.LabelInfo {
	return store.LabelInfo{Refs: cur.refs, ModTime: cur.mod, Bad: cur.bad}
}

// GetByLabel returns a label's refs, oldest first.
func (s *Store) GetByLabel(ctx context.Context, name string) ([]store.Hash, error) {
	if err := store.ValidateLabel(name); err != nil {
		return nil, err
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	cur, err := s.readLabel(ctx, name)
	if err != nil {
		return nil, err
	}
	if err := cur.info().Corrupt(name); err != nil {
		return nil, err
	}
	return cur.refs, nil
}

// ResolveLabel returns the one ref of a label.
func (s *Store) ResolveLabel(ctx context.Context, name string) (store.Hash, error) {
	refs, err := s.GetByLabel(ctx, name)
	if err != nil {
		return store.Hash{}, err
	}
	return store.SingleRef(name, refs)
}

// Label appends h to a label unless it holds h already; the blob must
// exist. Appends racing on other nodes are all kept.
func (s *Store) Label(ctx context.Context, name string, h store.Hash) error {
	if err := s.mustExist(ctx, h); err != nil {
		return err
	}
	return s.appendRef(ctx, name, h)
}

func (s *Store) appendRef(ctx context.Context, name string, h store.Hash) error {
	return s.change(ctx, name, func(cur current) ([]store.Hash, error) {
		if err := cur.info().Rewritable(name); err != nil {
			return nil, err
		}
		if slices.Contains(cur.refs, h) {
			return nil, errKeep
		}
		return append(slices.Clip(cur.refs), h), nil
	})
}

// ReplaceAtLabel makes a label hold exactly h, which must exist.
func (s *Store) ReplaceAtLabel(ctx context.Context, name string, h store.Hash) error {
	if err := s.mustExist(ctx, h); err != nil {
		return err
	}
	return s.replaceRef(ctx, name, h)
}

func (s *Store) replaceRef(ctx context.Context, name string, h store.Hash) error {
	return s.change(ctx, name, func(cur current) ([]store.Hash, error) {
		if cur.bad == 0 && slices.Equal(cur.refs, []store.Hash{h}) {
			return nil, errKeep
		}
		return []store.Hash{h}, nil
	})
}

// SetLabel makes a label hold exactly refs, in order, each of which must
// exist (sync's, not Theater's).
func (s *Store) SetLabel(ctx context.Context, name string, refs []store.Hash) error {
	if len(refs) == 0 {
		return labelErr(name, fmt.Errorf("%w: a label holds at least one ref", store.ErrInvalidLabel))
	}
	checked := make(map[store.Hash]bool, len(refs))
	for _, h := range refs {
		if checked[h] {
			continue
		}
		checked[h] = true
		if err := s.mustExist(ctx, h); err != nil {
			return err
		}
	}
	return s.change(ctx, name, func(cur current) ([]store.Hash, error) {
		if cur.bad == 0 && slices.Equal(cur.refs, refs) {
			return nil, errKeep
		}
		return refs, nil
	})
}

// RemoveLabel deletes a label; its blobs stay until garbage collection.
func (s *Store) RemoveLabel(ctx context.Context, name string) error {
	return s.change(ctx, name, func(cur current) ([]store.Hash, error) {
		if !cur.exists() {
			if cur.retried {
				return nil, errKeep // removed by the attempt whose answer was lost
			}
			return nil, labelErr(name, store.ErrNotFound)
		}
		return nil, nil
	})
}

// RemoveFromLabel removes one ref from a label; a label left empty is
// deleted.
func (s *Store) RemoveFromLabel(ctx context.Context, name string, h store.Hash) error {
	return s.change(ctx, name, func(cur current) ([]store.Hash, error) {
		i := slices.Index(cur.refs, h)
		if i < 0 && cur.retried {
			return nil, errKeep // removed by the attempt whose answer was lost
		}
		if !cur.exists() {
			return nil, labelErr(name, store.ErrNotFound)
		}
		if err := cur.info().Rewritable(name); err != nil {
			return nil, err
		}
		if i < 0 {
			return nil, labelErr(name, fmt.Errorf("ref %s: %w", h, store.ErrNotFound))
		}
		return slices.Delete(slices.Clone(cur.refs), i, i+1), nil
	})
}

// ListLabels returns every label name, nested ones as "a/b/c", sorted.
// Keys that are not valid label names are skipped with a warning.
func (s *Store) ListLabels(ctx context.Context) ([]string, error) {
	if err := s.open(); err != nil {
		return nil, err
	}
	var names []string
	err := s.labels.list(ctx, "", func(name, _ string) error {
		if strings.HasSuffix(name, "/") {
			return nil // a namespace's marker
		}
		if err := store.ValidateLabel(name); err != nil {
			s.log.Warn("skipping label key that is not a label name", "key", name)
			return nil
		}
		names = append(names, name)
		return nil
	})
	if err != nil {
		return nil, &store.Error{Op: "labels", Err: err}
	}
	sort.Strings(names)
	return names, nil
}
