package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
)

// Problem is one thing fsck found wrong.
type Problem struct {
	Kind   string `json:"kind"`   // "corrupt-blob", "missing-blob", "bad-label", "stray"
	Name   string `json:"name"`   // the blob hash, label name or file at fault
	Detail string `json:"detail"` // one human sentence
}

func (p Problem) String() string { return fmt.Sprintf("%s %s: %s", p.Kind, p.Name, p.Detail) }

// FsckReport is what Verify found.
type FsckReport struct {
	Blobs    int       `json:"blobs"`
	Labels   int       `json:"labels"`
	Problems []Problem `json:"problems"`
}

// Progress is told how far long work has come: done of total items.
type Progress func(done, total int)

// Verify (fsck) rehashes every blob and checks every label: it reports each
// blob whose content does not hash to its name, each label pointing to a
// missing blob, and each label file with lines that are not hashes. The
// verdicts it reaches are remembered for reads.
func (s *Store) Verify(ctx context.Context, progress Progress) (*FsckReport, error) {
	rep := &FsckReport{Problems: []Problem{}}
	hashes, err := s.ListAllContent(ctx)
	if err != nil {
		return nil, err
	}
	labels, err := s.ListLabels(ctx)
	if err != nil {
		return nil, err
	}
	total := len(hashes) + len(labels)
	rep.Blobs, rep.Labels = len(hashes), len(labels)
	buf := make([]byte, 1<<20)
	for i, h := range hashes {
		if progress != nil {
			progress(i, total)
		}
		if p := s.checkBlob(ctx, h, buf); p != nil {
			rep.Problems = append(rep.Problems, *p)
		}
		if err := ctx.Err(); err != nil {
			return rep, err
		}
	}
	for i, name := range labels {
		if progress != nil {
			progress(len(hashes)+i, total)
		}
		rep.Problems = append(rep.Problems, s.checkLabel(ctx, name)...)
	}
	strays, err := s.strays(ctx)
	if err != nil {
		return rep, err
	}
	rep.Problems = append(rep.Problems, strays...)
	if progress != nil {
		progress(total, total)
	}
	return rep, nil
}

// strays reports what is in data/ or labels/ but is neither a blob nor a
// label: names that are not hashes, symlinks (which Theater would follow),
// directories among the blobs, FIFOs and devices. Nothing is followed.
func (s *Store) strays(ctx context.Context) ([]Problem, error) {
	var out []Problem
	err := s.eachDataEntry(ctx, func(de os.DirEntry) error {
		switch {
		case !IsHashName(de.Name()):
			out = append(out, Problem{Kind: "stray", Name: DataDir + "/" + de.Name(), Detail: "not named by a hash"})
		case !de.Type().IsRegular():
			out = append(out, Problem{Kind: "stray", Name: DataDir + "/" + de.Name(), Detail: "not a regular file (" + de.Type().String() + ")"})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	labelStrays, err := call(ctx, s, func() ([]Problem, error) {
		var out []Problem
		err := fs.WalkDir(s.labels.FS(), ".", func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if t := d.Type(); !t.IsDir() && !t.IsRegular() {
				out = append(out, Problem{Kind: "stray", Name: LabelsDir + "/" + p, Detail: "not a label file or namespace (" + t.String() + ")"})
			}
			return nil
		})
		if err != nil {
			return nil, &Error{Op: "fsck", Name: LabelsDir, Err: err}
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	out = append(out, labelStrays...)
	slices.SortFunc(out, func(a, b Problem) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// checkBlob hashes one blob in full, whatever the remembered verdict says.
func (s *Store) checkBlob(ctx context.Context, h Hash, buf []byte) *Problem {
	type opened struct {
		f  *os.File
		fi os.FileInfo
	}
	o, err := call(ctx, s, func() (opened, error) {
		f, fi, err := s.openBlob(h)
		return opened{f, fi}, err
	})
	if errors.Is(err, ErrNotFound) {
		return nil // removed since listed
	}
	if err != nil {
		return &Problem{Kind: "corrupt-blob", Name: h.String(), Detail: err.Error()}
	}
	defer o.f.Close()
	hs := NewHasher()
	_, err = io.CopyBuffer(hs, io.NewSectionReader(o.f, 0, o.fi.Size()), buf)
	if err != nil {
		return &Problem{Kind: "corrupt-blob", Name: h.String(), Detail: "cannot read: " + err.Error()}
	}
	sum, err := hs.Sum()
	ok := err == nil && sum == h
	s.verdicts.record(h, o.fi, ok)
	switch {
	case errors.Is(err, ErrCollision):
		return &Problem{Kind: "corrupt-blob", Name: h.String(), Detail: "content carries a SHA-1 collision attack"}
	case !ok:
		return &Problem{Kind: "corrupt-blob", Name: h.String(), Detail: fmt.Sprintf("content hashes to %s (%d bytes)", sum, o.fi.Size())}
	}
	return nil
}

// checkLabel reports a label's unreadable lines and refs to missing blobs.
func (s *Store) checkLabel(ctx context.Context, name string) []Problem {
	type result struct {
		refs []Hash
		bad  int
	}
	r, err := call(ctx, s, func() (result, error) {
		refs, bad, err := s.readLabel(name)
		return result{refs, bad}, err
	})
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return []Problem{{Kind: "bad-label", Name: name, Detail: err.Error()}}
	}
	var out []Problem
	if r.bad > 0 {
		out = append(out, Problem{Kind: "bad-label", Name: name, Detail: NotHashes(r.bad)})
	}
	if len(r.refs) == 0 && r.bad == 0 {
		out = append(out, Problem{Kind: "bad-label", Name: name, Detail: "label holds no refs"})
	}
	for _, h := range r.refs {
		ok, err := s.Exists(ctx, h)
		if err != nil {
			out = append(out, Problem{Kind: "missing-blob", Name: name, Detail: err.Error()})
		} else if !ok {
			out = append(out, Problem{Kind: "missing-blob", Name: name, Detail: "points to missing blob " + h.String()})
		}
	}
	return out
}
