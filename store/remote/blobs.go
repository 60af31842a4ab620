package remote

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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
		h, err := s.commitBytes(ctx, (*buf)[:n], label, mode)
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
	sums := newSums()
	w := io.MultiWriter(f, sums)
	var m int64
	if _, err = w.Write((*buf)[:n]); err == nil {
		m, err = io.CopyBuffer(w, r, *buf)
	}
	total := int64(n) + m
	if err != nil {
		return store.Hash{}, total, &store.Error{Op: "store", Err: err}
	}
	c, err := sums.content(f, total)
	if err != nil {
		return c.h, total, err
	}
	return c.h, total, s.commit(ctx, c, label, mode)
}

// putBytes stores content already in memory.
func (s *Store) putBytes(ctx context.Context, b []byte, label string, mode store.LabelMode) (store.Hash, error) {
	if err := s.checkPut(label, mode); err != nil {
		return store.Hash{}, err
	}
	return s.commitBytes(ctx, b, label, mode)
}

// commitBytes is putBytes once the put is known to be allowed.
func (s *Store) commitBytes(ctx context.Context, b []byte, label string, mode store.LabelMode) (store.Hash, error) {
	sums := newSums()
	sums.Write(b)
	c, err := sums.content(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		return c.h, err
	}
	return c.h, s.commit(ctx, c, label, mode)
}

// sums hashes content on its way in: SHA-1 (with collision detection) for
// its name, MD5 for the service to check it arrived whole (Content-MD5)
// and for comparing it with what the service holds (the ETag of an object
// written in one PUT is its MD5).
type sums struct {
	sha *store.Hasher
	md5 hash.Hash
}

func newSums() *sums { return &sums{store.NewHasher(), md5.New()} }

func (s *sums) Write(p []byte) (int, error) {
	s.sha.Write(p)
	return s.md5.Write(p)
}

// content is what sums has seen, ready to upload from body (rewound).
func (s *sums) content(body io.ReadSeeker, n int64) (blobContent, error) {
	h, err := s.sha.Sum()
	if err != nil {
		return blobContent{h: h}, &store.Error{Op: "store", Err: err}
	}
	if _, err := body.Seek(0, io.SeekStart); err != nil {
		return blobContent{h: h}, &store.Error{Op: "store", Err: err}
	}
	return blobContent{h: h, md5: s.md5.Sum(nil), body: body, n: n}, nil
}

// blobContent is a blob to upload.
type blobContent struct {
	h    store.Hash
	md5  []byte
	body io.ReadSeeker
	n    int64
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

// commit uploads content unless the bucket has it, then points label at
// it.
func (s *Store) commit(ctx context.Context, c blobContent, label string, mode store.LabelMode) error {
	if err := s.upload(ctx, c); err != nil {
		return err
	}
	return s.commitLabel(ctx, c.h, label, mode)
}

// commitLabel points label at h as mode says.
func (s *Store) commitLabel(ctx context.Context, h store.Hash, label string, mode store.LabelMode) error {
	switch mode {
	case store.LabelAppend:
		return s.appendRef(ctx, label, h)
	case store.LabelReplace:
		return s.replaceRef(ctx, label, h)
	}
	return nil
}

// upload writes data/<h>. Content already there is not rewritten, unless
// it is not this content (another size, another MD5): then it is
// replaced. A small blob is sent at once, create-only, and a refusal means
// it is there; a large one is looked for first, so that a dedup costs no
// upload.
func (s *Store) upload(ctx context.Context, c blobContent) error {
	if c.n > maxPut {
		return blobErr(c.h, fmt.Errorf("%d bytes: blobs over 5 GiB need a multipart upload, which this backend does not make yet", c.n))
	}
	if c.n > smallBlob {
		present, err := s.present(ctx, c)
		if present || err != nil {
			return err
		}
	}
	_, err := s.b.put(ctx, blobKey(c.h), c.body, c.n, createOnly, c.md5, unsignedPayload)
	if err != nil && ctx.Err() == nil {
		// There already, or being stored by another writer this moment.
		// Any failure is looked into the same way: a service refusing
		// a create-only put may answer before the body is all sent and
		// close the connection, and the refusal then reads as a reset
		// connection (versitygw does, for a large blob).
		if present, err := s.present(ctx, c); present || err != nil {
			return err
		}
		if _, err := c.body.Seek(0, io.SeekStart); err != nil {
			return blobErr(c.h, err)
		}
		_, err = s.b.put(ctx, blobKey(c.h), c.body, c.n, anyVersion, c.md5, unsignedPayload)
	}
	if err != nil {
		return blobErr(c.h, err)
	}
	return nil
}

// present reports whether data/<h> holds c. An object of another size or
// MD5 is not this content, whatever its name: it is logged, to be
// replaced. One whose ETag is not an MD5 (a multipart upload's) is read
// and hashed.
func (s *Store) present(ctx context.Context, c blobContent) (bool, error) {
	info, err := s.b.head(ctx, blobKey(c.h))
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false, nil
	case err != nil:
		return false, blobErr(c.h, err)
	case info.size != c.n:
		s.log.Warn("replacing blob whose size does not match its name", "blob", c.h, "size", info.size, "want", c.n)
		return false, nil
	}
	if etag, err := hex.DecodeString(info.etag); err == nil && len(etag) == md5.Size {
		if !bytes.Equal(etag, c.md5) {
			s.log.Warn("replacing blob whose content does not match its name", "blob", c.h)
			return false, nil
		}
		return true, nil
	}
	r, _, err := s.OpenBlob(ctx, c.h)
	if err != nil {
		return false, err
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		if errors.Is(err, store.ErrCorrupt) {
			s.log.Warn("replacing blob whose content does not match its name", "blob", c.h)
			return false, nil
		}
		return false, err
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
		err = blobErr(b.h, readErr(b.ctx, err))
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
		return n, blobErr(b.h, readErr(b.ctx, err))
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

func (b *blob) Close() error { return b.body.Close() }

// readErr is an error met reading an answer's body: the service's (or
// the network's), unless the caller gave up.
func readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return serviceError(err.Error())
}
