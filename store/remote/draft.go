package remote

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/theater-storefs/theater-storefs/store"
)

// draft is content written through the mount on its way to the bucket: a
// local file, hashed as it is written while the writes come in order, and
// once more at Commit if they did not.
type draft struct {
	s      *Store
	f      *os.File
	size   int64
	sums   *sums
	hashed int64 // bytes [0, hashed) are in sums
	dirty  bool  // written out of order: hash the file at Commit
	done   bool
}

var _ store.Draft = (*draft)(nil)

// NewDraft starts content to be stored.
func (s *Store) NewDraft() (store.Draft, error) {
	if err := s.writable(); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.spoolDir, ".theater-storefs-draft-*")
	if err != nil {
		return nil, &store.Error{Op: "store", Err: fmt.Errorf("spool: %w", err)}
	}
	return &draft{s: s, f: f, sums: newSums()}, nil
}

func (d *draft) Write(p []byte) (int, error) { return d.WriteAt(p, d.size) }

func (d *draft) WriteAt(p []byte, off int64) (int, error) {
	n, err := d.f.WriteAt(p, off)
	if !d.dirty && off == d.hashed {
		d.sums.Write(p[:n])
		d.hashed += int64(n)
	} else {
		d.dirty = true
	}
	d.size = max(d.size, off+int64(n))
	return n, err
}

func (d *draft) ReadAt(p []byte, off int64) (int, error) {
	if off >= d.size {
		return 0, io.EOF
	}
	n, err := d.f.ReadAt(p[:min(int64(len(p)), d.size-off)], off)
	if err == nil && n < len(p) {
		err = io.EOF
	}
	return n, err
}

func (d *draft) ReadFrom(r io.Reader) (int64, error) { return store.WriteFrom(d, r) }

func (d *draft) Truncate(size int64) error {
	if err := d.f.Truncate(size); err != nil {
		return err
	}
	if size != d.hashed {
		d.dirty = true
	}
	d.size = size
	return nil
}

func (d *draft) Size() int64 { return d.size }

// Commit uploads the content unless the bucket has it, points label at it
// as mode says, and drops the local file, or gives it to the cache: what
// was just written is likely to be read next.
func (d *draft) Commit(ctx context.Context, label string, mode store.LabelMode) (store.Hash, error) {
	defer d.Discard()
	if d.done {
		return store.Hash{}, &store.Error{Op: "store", Err: os.ErrClosed}
	}
	if err := d.s.checkPut(label, mode); err != nil {
		return store.Hash{}, err
	}
	body := io.NewSectionReader(d.f, 0, d.size)
	if d.dirty {
		d.sums = newSums()
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(d.sums, body, *buf)
		copyBufs.Put(buf)
		if err != nil {
			return store.Hash{}, &store.Error{Op: "store", Err: err}
		}
	}
	c, err := d.sums.content(body, d.size)
	if err != nil {
		return c.h, err
	}
	if err := d.s.upload(ctx, c); err != nil {
		return c.h, err
	}
	if d.s.cache != nil && d.f.Sync() == nil && d.s.cache.adopt(c.h, d.f.Name(), d.size) {
		d.done = true // the file is the cache's now
		d.f.Close()
	}
	return c.h, d.s.commitLabel(ctx, c.h, label, mode)
}

func (d *draft) Discard() {
	if d.done {
		return
	}
	d.done = true
	d.f.Close()
	os.Remove(d.f.Name())
}
