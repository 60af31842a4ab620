package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/theater-storefs/theater-storefs/store"
)

func blobErr(h store.Hash, err error) error {
	return &store.Error{Op: "blob", Name: h.String(), Err: err}
}

func blobKey(h store.Hash) string { return store.DataDir + "/" + h.String() }

// maxPut is the largest object one S3 PUT may carry.
const maxPut = 5 << 30

// smallBlob is the most content PutLabeled holds in memory.
const smallBlob = 1 << 20

// copyBufs hold small blobs and carry large ones to the spool.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, smallBlob); return &b }}

// PutLabeled stores everything r yields and updates label as mode says.
// The content must be hashed before it can be named and uploaded: up to
// smallBlob bytes are held in memory, more are spooled to a local file,
// so memory stays flat at any size.
func (s *Store) PutLabeled(ctx context.Context, r io.Reader, label string, mode store.LabelMode) (store.Hash, int64, error) {
	if err := s.checkPut(label, mode); err != nil {
		return store.Hash{}, 0, err
	}
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.ReadFull(r, *buf)
	switch err {
	case io.EOF, io.ErrUnexpectedEOF:
		h, err := s.putBytes(ctx, (*buf)[:n], label, mode)
		return h, int64(n), err
	case nil:
	default:
		return store.Hash{}, int64(n), &store.Error{Op: "store", Err: err}
	}
	f, err := os.CreateTemp(s.spoolDir, ".theater-storefs-put-*")
	if err != nil {
		return store.Hash{}, 0, &store.Error{Op: "store", Err: fmt.Errorf("spool: %w", err)}
	}
	defer os.Remove(f.Name())
	defer f.Close()
	hr := store.NewHasher()
	w := io.MultiWriter(f, hr)
	w.Write((*buf)[:n]) // a MultiWriter fails only as f does, and so will the copy
	m, err := io.CopyBuffer(w, r, *buf)
	total := int64(n) + m
	if err != nil {
		return store.Hash{}, total, &store.Error{Op: "store", Err: err}
	}
	h, err := hr.Sum()
	if err != nil {
		return h, total, &store.Error{Op: "store", Err: err}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return h, total, &store.Error{Op: "store", Err: err}
	}
	return h, total, s.commit(ctx, h, f, total, label, mode)
}

// putBytes stores content already in memory.
func (s *Store) putBytes(ctx context.Context, content []byte, label string, mode store.LabelMode) (store.Hash, error) {
	if err := s.checkPut(label, mode); err != nil {
		return store.Hash{}, err
	}
	h, err := store.Sum(content)
	if err != nil {
		return h, &store.Error{Op: "store", Err: err}
	}
	return h, s.commit(ctx, h, bytes.NewReader(content), int64(len(content)), label, mode)
}

func (s *Store) checkPut(label string, mode store.LabelMode) error {
	if err := s.writable(); err != nil {
		return err
	}
	if mode != store.LabelNone {
		return store.ValidateLabel(label)
	}
	return nil
}

// commit uploads content named h unless the bucket has it, then points
// label at it.
func (s *Store) commit(ctx context.Context, h store.Hash, body io.ReadSeeker, n int64, label string, mode store.LabelMode) error {
	if err := s.upload(ctx, h, body, n); err != nil {
		return err
	}
	switch mode {
	case store.LabelAppend:
		return s.appendRef(ctx, label, h)
	case store.LabelReplace:
		return s.replaceRef(ctx, label, h)
	}
	return nil
}

// upload writes data/<h>. Content already there is not rewritten, unless
// its size shows it is not this content: then it is replaced. A small
// blob is sent at once, create-only, and a refusal means it is there; a
// large one is looked for first, so that a dedup costs no upload.
func (s *Store) upload(ctx context.Context, h store.Hash, body io.ReadSeeker, n int64) error {
	if n > maxPut {
		return blobErr(h, fmt.Errorf("%d bytes: blobs over 5 GiB need a multipart upload, which this backend does not make yet", n))
	}
	if n > smallBlob {
		present, err := s.present(ctx, h, n)
		if present || err != nil {
			return err
		}
	}
	_, err := s.b.put(ctx, blobKey(h), body, n, createOnly, unsignedPayload)
	if errors.Is(err, errConflict) {
		// There already, or being stored by another writer this moment.
		if present, err := s.present(ctx, h, n); present || err != nil {
			return err
		}
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return blobErr(h, err)
		}
		_, err = s.b.put(ctx, blobKey(h), body, n, anyVersion, unsignedPayload)
	}
	if err != nil {
		return blobErr(h, err)
	}
	return nil
}

// present reports whether data/<h> is there with n bytes. One of another
// size is not this content, whatever its name: it is logged, to be
// replaced.
func (s *Store) present(ctx context.Context, h store.Hash, n int64) (bool, error) {
	info, err := s.b.head(ctx, blobKey(h))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, blobErr(h, err)
	case info.size != n:
		s.log.Warn("replacing blob whose size does not match its name", "blob", h, "size", info.size, "want", n)
		return false, nil
	}
	return true, nil
}

// Store saves content and returns its hash (Theater's store).
func (s *Store) Store(ctx context.Context, content []byte) (store.Hash, error) {
	return s.putBytes(ctx, content, "", store.LabelNone)
}

// PutAtLabel stores content and appends its ref to a label.
func (s *Store) PutAtLabel(ctx context.Context, name string, content []byte) (store.Hash, error) {
	return s.putBytes(ctx, content, name, store.LabelAppend)
}

// ReplaceContentAtLabel stores content and makes the label hold exactly
// its ref.
func (s *Store) ReplaceContentAtLabel(ctx context.Context, name string, content []byte) (store.Hash, error) {
	return s.putBytes(ctx, content, name, store.LabelReplace)
}

// Get reads a whole blob, verified.
func (s *Store) Get(ctx context.Context, h store.Hash) ([]byte, error) {
	return store.ReadBlob(ctx, s, h)
}

// ResolveReference returns the content a Theater reference names.
func (s *Store) ResolveReference(ctx context.Context, ref string) ([]byte, error) {
	return store.ReadReference(ctx, s, ref)
}

// OpenReference is ResolveReference as a stream.
func (s *Store) OpenReference(ctx context.Context, ref string) (io.ReadCloser, error) {
	return store.OpenReference(ctx, s, ref)
}

// Stat returns a blob's size and time.
func (s *Store) Stat(ctx context.Context, h store.Hash) (store.BlobInfo, error) {
	if err := s.open(); err != nil {
		return store.BlobInfo{}, err
	}
	if s.cache != nil {
		if fi, ok := s.cache.stat(h); ok {
			return infoOf(fi), nil
		}
	}
	info, err := s.b.head(ctx, blobKey(h))
	if err != nil {
		return store.BlobInfo{}, blobErr(h, err)
	}
	return store.BlobInfo{Size: info.size, ModTime: info.mod}, nil
}

// Exists reports whether the blob is in the store.
func (s *Store) Exists(ctx context.Context, h store.Hash) (bool, error) {
	_, err := s.Stat(ctx, h)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *Store) mustExist(ctx context.Context, h store.Hash) error {
	_, err := s.Stat(ctx, h)
	return err
}

// ListAllContent returns every blob's hash, in order.
func (s *Store) ListAllContent(ctx context.Context) ([]store.Hash, error) {
	var out []store.Hash
	err := s.eachBlob(ctx, func(h store.Hash, _ objectInfo) { out = append(out, h) })
	return out, err
}

// CalculateTotalSize sums every blob's size.
func (s *Store) CalculateTotalSize(ctx context.Context) (int64, error) {
	var total int64
	err := s.eachBlob(ctx, func(_ store.Hash, info objectInfo) { total += info.size })
	return total, err
}

// eachBlob lists data/, skipping keys that are not blob names.
func (s *Store) eachBlob(ctx context.Context, fn func(store.Hash, objectInfo)) error {
	if err := s.open(); err != nil {
		return err
	}
	err := s.b.list(ctx, store.DataDir+"/", 0, func(name string, info objectInfo) error {
		if h, err := store.ParseHash(name); err == nil {
			fn(h, info)
		}
		return nil
	})
	if err != nil {
		return &store.Error{Op: "list", Name: store.DataDir, Err: err}
	}
	return nil
}

// OpenBlob opens a blob. Reading it through from the start verifies it:
// content that does not hash to its name gives ErrCorrupt in place of
// io.EOF. ReadAt fetches ranges and verifies nothing.
func (s *Store) OpenBlob(ctx context.Context, h store.Hash) (store.Blob, store.BlobInfo, error) {
	if err := s.open(); err != nil {
		return nil, store.BlobInfo{}, err
	}
	body, info, err := s.b.get(ctx, blobKey(h), 0, 0)
	if err != nil {
		return nil, store.BlobInfo{}, blobErr(h, err)
	}
	bl := &blob{ctx: ctx, s: s, h: h, size: info.size, body: body, hr: store.NewHasher()}
	return bl, store.BlobInfo{Size: info.size, ModTime: info.mod}, nil
}

// blob is an open object: a streamed body, verified as it is read.
type blob struct {
	ctx  context.Context
	s    *Store
	h    store.Hash
	size int64
	body io.ReadCloser
	hr   *store.Hasher
	read int64
	err  error // sticky, once the end is reached or reading failed
}

func (b *blob) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.body.Read(p)
	b.hr.Write(p[:n])
	b.read += int64(n)
	if err == io.EOF {
		err = b.verify()
	} else if err != nil {
		err = blobErr(b.h, err)
	}
	b.err = err
	return n, err
}

// verify is the end of a read through: the content must be whole and
// hash to the blob's name.
func (b *blob) verify() error {
	if b.read != b.size {
		return blobErr(b.h, fmt.Errorf("%w: read %d of %d bytes", store.ErrCorrupt, b.read, b.size))
	}
	sum, err := b.hr.Sum()
	if err != nil || sum != b.h {
		return blobErr(b.h, fmt.Errorf("%w: content does not hash to its name", store.ErrCorrupt))
	}
	return io.EOF
}

func (b *blob) ReadAt(p []byte, off int64) (int, error) {
	if off >= b.size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), b.size-off)
	body, _, err := b.s.b.get(b.ctx, blobKey(b.h), off, want)
	if err != nil {
		return 0, blobErr(b.h, err)
	}
	defer body.Close()
	n, err := io.ReadFull(body, p[:want])
	if err != nil {
		return n, blobErr(b.h, err)
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

func (b *blob) Close() error { return b.body.Close() }
