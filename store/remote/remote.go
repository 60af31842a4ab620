// Package remote keeps a content store in an S3-compatible bucket (Ceph
// RGW, SeaweedFS, versitygw, AWS S3), laid out as a store directory is:
// blobs at <prefix>data/<sha1>, labels at <prefix>labels/<name>, so a
// bucket mirrors a local store and `theater-storefs sync` copies between
// them.
//
// Several nodes may share a bucket. Blobs are immutable and named by their
// content, so two nodes storing the same blob write the same bytes; they
// are written create-only (If-None-Match: *). Labels change only by
// compare-and-swap on the object's ETag (If-Match), retried after a lost
// race, so an append racing with another node's append keeps both.
//
// There is no owner goroutine here as in the local store: the service's
// conditional writes are what orders changes, across goroutines and nodes
// alike.
package remote

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// Options tune a remote Store.
type Options struct {
	// Logger receives warnings about what the store skips. Nil means
	// slog.Default().
	Logger *slog.Logger
	// SpoolDir holds content on its way to the bucket, which must be
	// hashed before it can be named. Empty means os.TempDir().
	SpoolDir string
	// ReadOnly refuses every change.
	ReadOnly bool
	// CacheDir, if set, keeps verified copies of the blobs opened with
	// Open (a mount's reads) in CacheDir/blobs, at most CacheSize bytes
	// of them (DefaultCacheSize if 0), and the drafts in CacheDir/spool
	// unless SpoolDir says otherwise. One process at a time may use it.
	CacheDir  string
	CacheSize int64
	// PollInterval is how often Feed lists the labels for changes made
	// elsewhere; DefaultPollInterval if 0.
	PollInterval time.Duration
	// Labels, if set, keeps the labels in etcd rather than in the
	// bucket: etcd://host:port[,host:port]/prefix.
	Labels string
}

// Defaults of Options.
const (
	DefaultCacheSize    = 1 << 30
	DefaultPollInterval = time.Second
)

// Store is a content store in a bucket. It is safe for concurrent use.
type Store struct {
	loc      Location
	b        *bucket
	labels   labelStore
	log      *slog.Logger
	spoolDir string
	readOnly bool
	cache    *blobCache
	poll     time.Duration
	closed   atomic.Bool
	// conflicts counts label changes that lost a race and were retried.
	conflicts atomic.Int64
}

var _ store.Backend = (*Store)(nil)

// Open opens the store at loc. Credentials come from the usual AWS
// environment variables and files. Nothing is created: a bucket is made by
// whoever runs the service, and an empty bucket is an empty store.
func Open(ctx context.Context, loc Location, opts Options) (*Store, error) {
	b, err := newBucket(ctx, loc)
	if err != nil {
		return nil, err
	}
	// One listing call tells a missing bucket or bad credentials apart
	// from a working store, before any command depends on it.
	if err := b.list(ctx, store.DataDir+"/", 1, func(string, objectInfo) error { return errStop }); err != nil {
		return nil, &store.Error{Op: "store", Name: loc.String(), Err: err}
	}
	s := &Store{loc: loc, b: b, log: opts.Logger, spoolDir: opts.SpoolDir, readOnly: opts.ReadOnly, poll: opts.PollInterval}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.labels = &s3Labels{b: b, log: s.log}
	if opts.Labels != "" {
		if s.labels, err = openEtcd(ctx, opts.Labels, s.log); err != nil {
			return nil, err
		}
	}
	if s.poll <= 0 {
		s.poll = DefaultPollInterval
	}
	if opts.CacheDir != "" {
		size := opts.CacheSize
		if size <= 0 {
			size = DefaultCacheSize
		}
		// The cache's lock first: the spool is cleared only by its owner.
		if s.cache, err = openCache(filepath.Join(opts.CacheDir, "blobs"), size); err != nil {
			s.labels.close()
			return nil, err
		}
		if s.spoolDir == "" {
			s.spoolDir = filepath.Join(opts.CacheDir, "spool")
			// Drafts a crash left behind are of no use to anyone.
			os.RemoveAll(s.spoolDir)
			if err := os.MkdirAll(s.spoolDir, 0o700); err != nil {
				s.cache.close()
				s.labels.close()
				return nil, fmt.Errorf("spool: %w", err)
			}
		}
	}
	if s.spoolDir == "" {
		s.spoolDir = os.TempDir()
	}
	return s, nil
}

// Close ends the use of the store. Later calls return ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	if s.cache != nil {
		s.cache.close()
	}
	return s.labels.close()
}

func (s *Store) open() error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	return nil
}

func (s *Store) writable() error {
	if err := s.open(); err != nil {
		return err
	}
	if s.readOnly {
		return &store.Error{Op: "store", Name: s.loc.String(), Err: os.ErrPermission}
	}
	return nil
}
