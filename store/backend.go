package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Backend is a content store as Theater's ContentStore sees it, wherever it
// keeps its blobs and labels. *Store, a local directory, is the default;
// package store/remote keeps them in an S3 bucket. Every backend passes the
// conformance suite in store/storetest.
//
// Blob bytes are streamed (PutLabeled, OpenBlob, OpenReference), so memory
// does not grow with blob size; the []byte operations are Theater's.
type Backend interface {
	// Theater's ContentStore, with its semantics.
	Store(ctx context.Context, content []byte) (Hash, error)
	Get(ctx context.Context, h Hash) ([]byte, error)
	Exists(ctx context.Context, h Hash) (bool, error)
	Label(ctx context.Context, name string, h Hash) error
	GetByLabel(ctx context.Context, name string) ([]Hash, error)
	RemoveLabel(ctx context.Context, name string) error
	RemoveFromLabel(ctx context.Context, name string, h Hash) error
	PutAtLabel(ctx context.Context, name string, content []byte) (Hash, error)
	ReplaceContentAtLabel(ctx context.Context, name string, content []byte) (Hash, error)
	ReplaceAtLabel(ctx context.Context, name string, h Hash) error
	ListLabels(ctx context.Context) ([]string, error)
	ListAllContent(ctx context.Context) ([]Hash, error)
	CalculateTotalSize(ctx context.Context) (int64, error)
	ResolveReference(ctx context.Context, ref string) ([]byte, error)
	Close() error

	// PutLabeled stores everything r yields and updates label as mode says.
	PutLabeled(ctx context.Context, r io.Reader, label string, mode LabelMode) (Hash, int64, error)
	// OpenBlob opens a blob for reading. Content that does not hash to its
	// name is ErrCorrupt: at once, or at the latest in place of io.EOF
	// when it is read through to the end.
	OpenBlob(ctx context.Context, h Hash) (Blob, BlobInfo, error)
	// OpenReference is ResolveReference as a stream.
	OpenReference(ctx context.Context, ref string) (io.ReadCloser, error)
	// Stat returns a blob's size and time without reading it.
	Stat(ctx context.Context, h Hash) (BlobInfo, error)
	// ResolveLabel returns the one ref of a label (ErrAmbiguous if more).
	ResolveLabel(ctx context.Context, name string) (Hash, error)
	// SetLabel makes a label hold exactly refs, in order, in one change;
	// every ref must be in the store. (Not Theater's: sync's.)
	SetLabel(ctx context.Context, name string, refs []Hash) error
}

// Blob is an open blob: read through once from the start, or at any offset.
type Blob interface {
	io.Reader
	io.ReaderAt
	io.Closer
}

var _ Backend = (*Store)(nil)

// Draft is content on its way into a store, written in any order, hashed
// when it is committed if not as it arrived. *Spool is the local store's.
type Draft interface {
	io.Writer
	io.WriterAt
	io.ReaderAt
	io.ReaderFrom
	Truncate(size int64) error
	Size() int64
	// Commit stores the content, points label at it as mode says, and
	// consumes the draft.
	Commit(ctx context.Context, label string, mode LabelMode) (Hash, error)
	// Discard drops the draft; after Commit it does nothing.
	Discard()
}

// Feed is a change feed: Ready fires when changes wait to be taken; Done
// closes when the feed ends. *Watcher is the local store's.
type Feed interface {
	Ready() <-chan struct{}
	Done() <-chan struct{}
	Take() (changes []Change, overflow bool)
	Close() error
}

var (
	_ Draft = (*Spool)(nil)
	_ Feed  = (*Watcher)(nil)
)

// NewDraft is NewSpool as a Draft.
func (s *Store) NewDraft() (Draft, error) {
	sp, err := s.NewSpool()
	if err != nil {
		return nil, err
	}
	return sp, nil
}

// Feed is Watch as a Feed.
func (s *Store) Feed() (Feed, error) {
	w, err := s.Watch()
	if err != nil {
		return nil, err
	}
	return w, nil
}

// OpenBlob is Open for the Backend interface.
func (s *Store) OpenBlob(ctx context.Context, h Hash) (Blob, BlobInfo, error) {
	f, bi, err := s.Open(ctx, h)
	if err != nil {
		return nil, bi, err
	}
	return f, bi, nil
}

// BlobOpener is what reading blobs needs of a backend: ReadBlob and the
// chain walks take one, so that a backend can hand them its blobs through
// a cache.
type BlobOpener interface {
	OpenBlob(ctx context.Context, h Hash) (Blob, BlobInfo, error)
}

// ReadBlob reads a whole blob into memory (Theater's get).
func ReadBlob(ctx context.Context, b BlobOpener, h Hash) ([]byte, error) {
	return readBlob(ctx, b, h, -1)
}

// readBlob is ReadBlob of a blob of at most max bytes (-1: any).
func readBlob(ctx context.Context, b BlobOpener, h Hash, max int64) ([]byte, error) {
	r, bi, err := b.OpenBlob(ctx, h)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if max >= 0 && bi.Size > max {
		return nil, blobErr(h, fmt.Errorf("%d bytes, over the %d this read allows", bi.Size, max))
	}
	buf := make([]byte, bi.Size)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, asBlobErr(h, err)
	}
	// Reading on to the end lets a backend that verifies as it streams
	// say whether the content was whole.
	if n, err := r.Read(make([]byte, 1)); n > 0 || (err != nil && err != io.EOF) {
		if err == nil {
			err = fmt.Errorf("%w: longer than its size", ErrCorrupt)
		}
		return nil, asBlobErr(h, err)
	}
	return buf, nil
}

// asBlobErr names the blob in err, unless err names something already.
func asBlobErr(h Hash, err error) error {
	var se *Error
	if errors.As(err, &se) {
		return err
	}
	return blobErr(h, err)
}

// OpenReference opens what a Theater reference names in backend b:
// store:hash:<h>, store:<label> (which must hold one ref), or a file path.
func OpenReference(ctx context.Context, b Backend, ref string) (io.ReadCloser, error) {
	kind, arg := ParseReference(ref)
	var h Hash
	var err error
	switch kind {
	case RefHash:
		h, err = ParseHash(arg)
	case RefLabel:
		h, err = b.ResolveLabel(ctx, arg)
	default:
		f, err := os.Open(arg)
		if err != nil {
			return nil, &Error{Op: "reference", Name: ref, Err: err}
		}
		return f, nil
	}
	if err != nil {
		return nil, err
	}
	r, _, err := b.OpenBlob(ctx, h)
	return r, err
}

// ReadReference reads all of what a reference names (Theater's
// resolve_reference).
func ReadReference(ctx context.Context, b Backend, ref string) ([]byte, error) {
	r, err := OpenReference(ctx, b, ref)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// SingleRef is ResolveLabel's rule on a label's refs: exactly one, else
// ErrNotFound (none) or ErrAmbiguous (more).
func SingleRef(name string, refs []Hash) (Hash, error) {
	switch len(refs) {
	case 0:
		return Hash{}, labelErr(name, fmt.Errorf("%w: label holds no refs", ErrNotFound))
	case 1:
		return refs[0], nil
	default:
		return Hash{}, labelErr(name, fmt.Errorf("%w (%d refs)", ErrAmbiguous, len(refs)))
	}
}
