package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readLabel returns a label's refs, oldest first. Lines that are not hashes
// are logged and skipped; bad reports how many there were.
func (s *Store) readLabel(name string) (refs []Hash, bad int, err error) {
	if err := ValidateLabel(name); err != nil {
		return nil, 0, err
	}
	f, err := s.labels.OpenFile(name, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err == nil && isSymlink(s.labels, name) {
		f.Close()
		err = syscall.ELOOP
	}
	if err != nil {
		switch {
		case errors.Is(err, syscall.ELOOP) || isSymlink(s.labels, name):
			s.log.Warn("skipping label that is a symlink", "label", name)
			return nil, 0, labelErr(name, fmt.Errorf("%w: label file is a symlink", ErrCorrupt))
		case errors.Is(err, syscall.ENOTDIR):
			return nil, 0, labelErr(name, ErrNotFound)
		}
		return nil, 0, labelErr(name, notFound(err))
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, labelErr(name, err)
	}
	if fi.IsDir() {
		return nil, 0, labelErr(name, ErrIsNamespace)
	}
	if !fi.Mode().IsRegular() {
		return nil, 0, labelErr(name, fmt.Errorf("%w: label file is not a regular file", ErrCorrupt))
	}
	if fi.Size() > MaxLabelFile {
		return nil, 0, labelErr(name, fmt.Errorf("%w: label file is %d bytes, over the %d limit", ErrCorrupt, fi.Size(), MaxLabelFile))
	}
	b, err := ReadLabelFile(f)
	if err != nil {
		return nil, 0, labelErr(name, err)
	}
	refs, badLines := ParseLabelFile(b)
	if len(badLines) > 0 {
		s.log.Warn("skipping label lines that are not hashes", "label", name, "lines", badLines)
	}
	return refs, len(badLines), nil
}

// ReadLabelFile reads a label file of at most MaxLabelFile bytes; a
// longer one is ErrCorrupt.
func ReadLabelFile(r io.Reader) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxLabelFile+1))
	if err == nil && len(b) > MaxLabelFile {
		err = fmt.Errorf("%w: label file over the %d limit", ErrCorrupt, MaxLabelFile)
	}
	return b, err
}

// readLabelStrict is readLabel for changes: a label with lines that are not
// hashes is not rewritten, so that nothing in it is silently dropped.
func (s *Store) readLabelStrict(name string) ([]Hash, error) {
	refs, bad, err := s.readLabel(name)
	if err == nil {
		err = LabelInfo{Refs: refs, Bad: bad}.Rewritable(name)
	}
	return refs, err
}

// checkLabelPath refuses a name that would nest under an existing label or
// turn an existing namespace into a label.
func (s *Store) checkLabelPath(name string, forWrite bool) error {
	if err := ValidateLabel(name); err != nil {
		return err
	}
	for i := 0; i < len(name); i++ {
		if name[i] != '/' {
			continue
		}
		fi, err := s.labels.Lstat(name[:i])
		if errors.Is(err, fs.ErrNotExist) {
			return nil // nothing below exists either
		}
		if err != nil {
			return labelErr(name, err)
		}
		if !fi.IsDir() {
			return labelErr(name, fmt.Errorf("%w: %q", ErrNotNamespace, name[:i]))
		}
	}
	if forWrite {
		if fi, err := s.labels.Lstat(name); err == nil && fi.IsDir() {
			return labelErr(name, ErrIsNamespace)
		}
	}
	return nil
}

// blobExists reports whether data/<h> is a regular file.
func (s *Store) blobExists(h Hash) (bool, error) {
	fi, err := s.data.Lstat(h.String())
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, blobErr(h, err)
	}
	s.noteFound(h, fi)
	return fi.Mode().IsRegular(), nil
}

// Label appends ref h to a label, creating it, unless the label holds h
// already. The blob must exist. (Theater's label.)
func (s *Store) Label(ctx context.Context, name string, h Hash) error {
	return s.change(ctx, func(lw *labelWriter) error {
		ok, err := s.blobExists(h)
		if err != nil {
			return err
		}
		if !ok {
			return blobErr(h, ErrNotFound)
		}
		return s.applyLabel(lw, name, h, LabelAppend)
	})
}

// ReplaceAtLabel makes a label hold exactly ref h, which must exist.
func (s *Store) ReplaceAtLabel(ctx context.Context, name string, h Hash) error {
	return s.change(ctx, func(lw *labelWriter) error {
		ok, err := s.blobExists(h)
		if err != nil {
			return err
		}
		if !ok {
			return blobErr(h, ErrNotFound)
		}
		return lw.write(name, []Hash{h})
	})
}

// SetLabel makes a label hold exactly refs, in order, each of which must
// exist. Theater has no such operation; sync copies labels with it.
func (s *Store) SetLabel(ctx context.Context, name string, refs []Hash) error {
	if len(refs) == 0 {
		return labelErr(name, fmt.Errorf("%w: a label holds at least one ref", ErrInvalidLabel))
	}
	return s.change(ctx, func(lw *labelWriter) error {
		for _, h := range refs {
			ok, err := s.blobExists(h)
			if err != nil {
				return err
			}
			if !ok {
				return blobErr(h, ErrNotFound)
			}
		}
		return lw.write(name, refs)
	})
}

// GetByLabel returns a label's refs, oldest first. A label with lines
// that are not hashes gives the refs among them (a torn append by Theater
// leaves the refs before it whole), or ErrCorrupt if there is none.
func (s *Store) GetByLabel(ctx context.Context, name string) ([]Hash, error) {
	return call(ctx, s, func() ([]Hash, error) {
		refs, bad, err := s.readLabel(name)
		if err == nil && len(refs) == 0 && bad > 0 {
			err = noRefsIn(name, bad)
		}
		return refs, err
	})
}

// noRefsIn is the error of a label none of whose bad lines is a hash.
func noRefsIn(name string, bad int) error {
	return labelErr(name, fmt.Errorf("%w: it holds no hash, only %s; replace the label to repair it", ErrCorrupt, NotHashes(bad)))
}

// NotHashes says how many lines of a label are not hashes, in words.
func NotHashes(n int) string {
	if n == 1 {
		return "1 line that is not a hash"
	}
	return fmt.Sprintf("%d lines that are not hashes", n)
}

// RemoveLabel deletes a label. Its blobs stay until garbage collection.
func (s *Store) RemoveLabel(ctx context.Context, name string) error {
	return s.change(ctx, func(lw *labelWriter) error {
		if err := ValidateLabel(name); err != nil {
			return err
		}
		if fi, err := s.labels.Lstat(name); err == nil && fi.IsDir() {
			return labelErr(name, ErrIsNamespace)
		}
		return lw.remove(name)
	})
}

// RemoveFromLabel removes one ref from a label; a label left empty is
// deleted.
func (s *Store) RemoveFromLabel(ctx context.Context, name string, h Hash) error {
	return s.change(ctx, func(lw *labelWriter) error {
		refs, err := s.readLabelStrict(name)
		if err != nil {
			return err
		}
		i := slices.Index(refs, h)
		if i < 0 {
			return labelErr(name, fmt.Errorf("ref %s: %w", h, ErrNotFound))
		}
		refs = slices.Delete(refs, i, i+1)
		if len(refs) == 0 {
			return lw.remove(name)
		}
		return lw.write(name, refs)
	})
}

// PutAtLabel stores content and appends its ref to a label.
func (s *Store) PutAtLabel(ctx context.Context, name string, content []byte) (Hash, error) {
	return s.putBytes(ctx, content, name, LabelAppend)
}

// ReplaceContentAtLabel stores content and makes the label hold exactly its
// ref.
func (s *Store) ReplaceContentAtLabel(ctx context.Context, name string, content []byte) (Hash, error) {
	return s.putBytes(ctx, content, name, LabelReplace)
}

// RenameLabel moves a label (or a namespace) to a new name, atomically,
// replacing a label already there. Theater has no rename; the mount needs
// it for mv, rsync and editors.
func (s *Store) RenameLabel(ctx context.Context, from, to string) error {
	return s.change(ctx, func(lw *labelWriter) error {
		if err := ValidateLabel(from); err != nil {
			return err
		}
		if err := s.checkLabelPath(to, false); err != nil {
			return err
		}
		src, err := s.labels.Lstat(from)
		if err != nil {
			return labelErr(from, notFound(err))
		}
		dst, err := s.labels.Lstat(to)
		dstIsDir := err == nil && dst.IsDir()
		if err == nil && dstIsDir != src.IsDir() {
			if dstIsDir {
				return labelErr(to, ErrIsNamespace)
			}
			return labelErr(to, ErrNotNamespace)
		}
		if src.IsDir() && strings.HasPrefix(to+"/", from+"/") {
			return labelErr(to, fmt.Errorf("%w: cannot move a namespace into itself", ErrInvalidLabel))
		}
		if dstIsDir {
			// rename(2) replaces an empty directory, but os.Root.Rename
			// refuses any existing one: remove it first if it is empty.
			if err := s.labels.Remove(to); err != nil {
				if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
					return labelErr(to, ErrNotEmpty)
				}
				return labelErr(to, err)
			}
		}
		if err := lw.mkdirAll(path.Dir(to)); err != nil {
			return labelErr(to, err)
		}
		if err := s.labels.Rename(from, to); err != nil {
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
				return labelErr(to, ErrNotEmpty)
			}
			return labelErr(to, err)
		}
		lw.dirs[path.Dir(from)] = true
		lw.dirs[path.Dir(to)] = true
		return nil
	})
}

// MakeNamespace creates an empty label namespace (a directory in labels/).
func (s *Store) MakeNamespace(ctx context.Context, name string) error {
	return s.change(ctx, func(lw *labelWriter) error {
		if err := s.checkLabelPath(name, false); err != nil {
			return err
		}
		if fi, err := s.labels.Lstat(name); err == nil {
			if fi.IsDir() {
				return labelErr(name, fmt.Errorf("namespace %w", ErrExists))
			}
			return labelErr(name, fmt.Errorf("label %w", ErrExists))
		}
		if err := lw.mkdirAll(name); err != nil {
			return labelErr(name, err)
		}
		return nil
	})
}

// RemoveNamespace removes an empty label namespace.
func (s *Store) RemoveNamespace(ctx context.Context, name string) error {
	return s.change(ctx, func(lw *labelWriter) error {
		if err := ValidateLabel(name); err != nil {
			return err
		}
		fi, err := s.labels.Lstat(name)
		if err != nil {
			return labelErr(name, notFound(err))
		}
		if !fi.IsDir() {
			return labelErr(name, ErrNotNamespace)
		}
		if err := s.labels.Remove(name); err != nil {
			if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
				return labelErr(name, ErrNotEmpty)
			}
			return labelErr(name, err)
		}
		lw.dirs[path.Dir(name)] = true
		return nil
	})
}

// change runs a label change on the owner and syncs what it touched.
func (s *Store) change(ctx context.Context, fn func(lw *labelWriter) error) error {
	if s.opts.ReadOnly {
		return &Error{Op: "label", Err: errReadOnly}
	}
	_, err := call(ctx, s, func() (struct{}, error) {
		lw := s.newLabelWriter()
		err := fn(lw)
		if ferr := lw.finish(); err == nil && ferr != nil {
			err = &Error{Op: "label", Err: ferr}
		}
		return struct{}{}, err
	})
	return err
}

// LabelEntry is one name in a label namespace.
type LabelEntry struct {
	Name        string // the last component
	IsNamespace bool
}

// ReadNamespace lists one level of labels/: the labels and namespaces
// directly in ns ("" for the top), sorted by name. Symlinks and other odd
// files are skipped with a log line.
func (s *Store) ReadNamespace(ctx context.Context, ns string) ([]LabelEntry, error) {
	return call(ctx, s, func() ([]LabelEntry, error) {
		dir := "."
		if ns != "" {
			if err := ValidateLabel(ns); err != nil {
				return nil, err
			}
			dir = ns
		}
		f, err := s.labels.OpenFile(dir, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_DIRECTORY, 0)
		if err != nil {
			if errors.Is(err, syscall.ENOTDIR) {
				return nil, labelErr(ns, ErrNotNamespace)
			}
			return nil, labelErr(ns, notFound(err))
		}
		defer f.Close()
		des, err := f.ReadDir(-1)
		if err != nil {
			return nil, labelErr(ns, err)
		}
		out := make([]LabelEntry, 0, len(des))
		for _, de := range des {
			switch t := de.Type(); {
			case t.IsDir():
				out = append(out, LabelEntry{Name: de.Name(), IsNamespace: true})
			case t.IsRegular():
				out = append(out, LabelEntry{Name: de.Name()})
			default:
				s.log.Warn("skipping label entry that is not a file or directory", "label", path.Join(ns, de.Name()), "type", t.String())
			}
		}
		slices.SortFunc(out, func(a, b LabelEntry) int { return strings.Compare(a.Name, b.Name) })
		return out, nil
	})
}

// ListLabels returns every label name, nested ones as "a/b/c", sorted.
func (s *Store) ListLabels(ctx context.Context) ([]string, error) {
	var out []string
	var walk func(ns string) error
	walk = func(ns string) error {
		ents, err := s.ReadNamespace(ctx, ns)
		if err != nil {
			return err
		}
		for _, e := range ents {
			full := e.Name
			if ns != "" {
				full = ns + "/" + e.Name
			}
			if e.IsNamespace {
				if err := walk(full); err != nil {
					return err
				}
				continue
			}
			out = append(out, full)
		}
		return nil
	}
	if err := walk(""); err != nil {
		return nil, err
	}
	slices.Sort(out)
	return out, nil
}

// LabelInfo describes a label for a file system: its refs and when it last
// changed.
type LabelInfo struct {
	Refs    []Hash
	ModTime time.Time
	Bad     int // lines of the label file that are not hashes, skipped
}

// Corrupt is the error of a label that holds lines but no ref (nil if it
// holds a ref, or nothing at all).
func (li LabelInfo) Corrupt(name string) error {
	if len(li.Refs) == 0 && li.Bad > 0 {
		return noRefsIn(name, li.Bad)
	}
	return nil
}

// Rewritable is the error of a label that holds lines that are not hashes
// (nil if it holds none): such a label is not rewritten, so that nothing in
// it is silently dropped; replacing it is the repair.
func (li LabelInfo) Rewritable(name string) error {
	if li.Bad > 0 {
		return labelErr(name, fmt.Errorf("%w: %s; replace the label to repair it", ErrCorrupt, NotHashes(li.Bad)))
	}
	return nil
}

// Head is the newest ref, the one whose content the label shows.
func (li LabelInfo) Head() (Hash, bool) {
	if len(li.Refs) == 0 {
		return Hash{}, false
	}
	return li.Refs[len(li.Refs)-1], true
}

// StatLabel returns a label's refs and modification time.
func (s *Store) StatLabel(ctx context.Context, name string) (LabelInfo, error) {
	return call(ctx, s, func() (LabelInfo, error) {
		refs, bad, err := s.readLabel(name)
		if err != nil {
			return LabelInfo{}, err
		}
		fi, err := s.labels.Lstat(name)
		if err != nil {
			return LabelInfo{}, labelErr(name, notFound(err))
		}
		return LabelInfo{Refs: refs, ModTime: fi.ModTime(), Bad: bad}, nil
	})
}

// IsNamespace reports whether name is an existing label namespace.
func (s *Store) IsNamespace(ctx context.Context, name string) (bool, error) {
	return call(ctx, s, func() (bool, error) {
		if err := ValidateLabel(name); err != nil {
			return false, err
		}
		fi, err := s.labels.Lstat(name)
		if err != nil {
			return false, labelErr(name, notFound(err))
		}
		return fi.IsDir(), nil
	})
}
