package remote

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// What a mount asks of a store beyond the Backend: blobs as local files
// (from the cache), drafts, namespaces, a change feed.

// Open returns a blob's verified copy in the cache, downloading it first
// if the cache has none. It needs Options.CacheDir.
func (s *Store) Open(ctx context.Context, h store.Hash) (*os.File, store.BlobInfo, error) {
	if err := s.open(); err != nil {
		return nil, store.BlobInfo{}, err
	}
	if s.cache == nil {
		return nil, store.BlobInfo{}, blobErr(h, errors.New("BUG: opened without a cache directory"))
	}
	f, err := s.cache.open(ctx, h, func(ctx context.Context, w io.Writer) (time.Time, error) {
		body, info, err := s.b.get(ctx, blobKey(h), 0, 0)
		if err != nil {
			return time.Time{}, blobErr(h, err)
		}
		defer body.Close()
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		n, err := io.CopyBuffer(w, body, *buf)
		if err != nil {
			return time.Time{}, blobErr(h, readErr(ctx, err))
		}
		if n != info.size {
			return time.Time{}, blobErr(h, serviceError("download cut short"))
		}
		return info.mod, nil
	})
	if err != nil {
		return nil, store.BlobInfo{}, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, store.BlobInfo{}, blobErr(h, err)
	}
	return f, infoOf(fi), nil
}

func infoOf(fi os.FileInfo) store.BlobInfo {
	bi := store.BlobInfo{Size: fi.Size(), ModTime: fi.ModTime()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		bi.Ino = st.Ino
	}
	return bi
}

// VisitChain walks an actor's chain from head, as store.VisitChain does,
// reading the events through the cache when there is one: a chain's
// events never change, and a mount walks them again as its head moves.
func (s *Store) VisitChain(ctx context.Context, head store.Hash, visit func(store.ChainLink) bool) error {
	if s.cache != nil {
		return store.VisitChain(ctx, cachedBlobs{s}, head, visit)
	}
	return store.VisitChain(ctx, s, head, visit)
}

// cachedBlobs opens the store's blobs from the cache.
type cachedBlobs struct{ s *Store }

func (c cachedBlobs) OpenBlob(ctx context.Context, h store.Hash) (store.Blob, store.BlobInfo, error) {
	f, bi, err := c.s.Open(ctx, h)
	if err != nil {
		return nil, bi, err
	}
	return f, bi, nil
}

// Dir is the local directory the store writes to: the cache, or the
// spool directory without one.
func (s *Store) Dir() string {
	if s.cache != nil {
		return s.cache.dir
	}
	return s.spoolDir
}
