// Package fs shows a Theater content store as a FUSE file system:
//
//	by-hash/<sha1>          every blob, read-only
//	by-label/<label>        every label; writing a file stores it and points the label at it
//	actors/<id>/chain-head  an actor's newest event, and chain/ with every event before it
//
// Every read and write is a request to the store's owner goroutine; blob
// bytes are read from the blob's own open file (by FUSE passthrough where the
// kernel allows it) and written into a spool file, never held in memory.
//
// Caching is set per kind of node: blobs never change, so their entries,
// attributes and pages are cached for an hour; labels and chain heads
// change, so their timeouts are short and they are read with direct I/O,
// except a large label's sealed version, which never changes either and
// is read like a blob (labelNode.openSealed).
package fs

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// Store is what the file system needs of the store. *store.Store has it,
// and so has a bucket's *remote.Store.
type Store interface {
	// Open returns a blob's file, verified.
	Open(ctx context.Context, h store.Hash) (*os.File, store.BlobInfo, error)
	Stat(ctx context.Context, h store.Hash) (store.BlobInfo, error)
	ListAllContent(ctx context.Context) ([]store.Hash, error)
	StatLabel(ctx context.Context, name string) (store.LabelInfo, error)
	IsNamespace(ctx context.Context, name string) (bool, error)
	ReadNamespace(ctx context.Context, ns string) ([]store.LabelEntry, error)
	NewDraft() (store.Draft, error)
	RemoveLabel(ctx context.Context, name string) error
	RenameLabel(ctx context.Context, from, to string) error
	MakeNamespace(ctx context.Context, name string) error
	RemoveNamespace(ctx context.Context, name string) error
	VisitChain(ctx context.Context, head store.Hash, visit func(store.ChainLink) bool) error
	Feed() (store.Feed, error)
	// Dir is a directory on the disk the store's files are written to
	// (statfs reports it).
	Dir() string
}

var _ Store = (*store.Store)(nil)

// Timeouts for the kernel's caches.
const (
	// Blobs never change: cache them long.
	blobTimeout = time.Hour
	// Labels change, also from other processes. With the change feed
	// invalidating the kernel's entries, its view may live a while;
	// without it, it must be short-lived.
	labelTimeout     = 500 * time.Millisecond
	liveLabelTimeout = 10 * time.Second
)

// Options configure the file system.
type Options struct {
	ReadOnly bool
	// UID and GID own every file; the mounting user by default.
	UID, GID uint32
	Logger   *slog.Logger
}

// fsys is shared by every node of one mount.
type fsys struct {
	st       Store
	readOnly bool
	uid, gid uint32
	log      *slog.Logger
	labelTTL time.Duration // entry and attribute timeout of labels
	started  time.Time     // the directories' times

	// open holds every file handle not released yet: go-fuse sends no
	// Release for files still open when the mount goes away.
	open sync.Map // fusefs.FileReleaser -> struct{}

	stale   moments[uint32] // processes whose label open just got ESTALE
	writers moments[string] // labels a writer sent away from a sealed node is walking to
}

// moments remembers keys for a short while each.
type moments[K comparable] struct {
	mu sync.Mutex
	m  map[K]time.Time // key -> until when it is remembered
}

// note remembers k until then; keys whose time is up are dropped.
func (ms *moments[K]) note(k K, until time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	now := time.Now()
	for old, t := range ms.m {
		if !now.Before(t) {
			delete(ms.m, old)
		}
	}
	if ms.m == nil {
		ms.m = map[K]time.Time{}
	}
	ms.m[k] = until
}

// until reports until when k is remembered, if it still is.
func (ms *moments[K]) until(k K) (time.Time, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	t, ok := ms.m[k]
	return t, ok && time.Now().Before(t)
}

// take forgets k and reports whether it was still remembered.
func (ms *moments[K]) take(k K) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	t, ok := ms.m[k]
	delete(ms.m, k)
	return ok && time.Now().Before(t)
}

// writerComing notes that a writer was sent away from label's sealed node
// and will walk its path again.
func (f *fsys) writerComing(label string) { f.writers.note(label, time.Now().Add(directAfterSeal)) }

// writerExpected reports until when a writer is expected at label.
func (f *fsys) writerExpected(label string) (time.Time, bool) { return f.writers.until(label) }

// staleAgain reports whether the calling process got ESTALE from a label
// open a moment ago, which makes this open the kernel's one retry of it;
// if not, it notes the ESTALE about to be given.
func (f *fsys) staleAgain(ctx context.Context) bool {
	caller, ok := fuse.FromContext(ctx)
	if !ok {
		return false
	}
	pid := processOf(caller.Pid)
	if f.stale.take(pid) {
		return true
	}
	f.stale.note(pid, time.Now().Add(staleRetryWindow))
	return false
}

// staleRetryWindow is how soon after an ESTALE the kernel's retry comes:
// it walks the path again at once.
const staleRetryWindow = 100 * time.Millisecond

func (f *fsys) opened(h fusefs.FileReleaser)   { f.open.Store(h, struct{}{}) }
func (f *fsys) released(h fusefs.FileReleaser) { f.open.Delete(h) }

// releaseAll releases the handles the kernel never released.
func (f *fsys) releaseAll() {
	f.open.Range(func(k, _ any) bool {
		k.(fusefs.FileReleaser).Release(context.Background())
		return true
	})
}

// NewRoot returns the root node of the file system over st.
func NewRoot(st Store, opts Options) fusefs.InodeEmbedder {
	f := &fsys{st: st, readOnly: opts.ReadOnly, uid: opts.UID, gid: opts.GID, log: opts.Logger, labelTTL: labelTimeout, started: time.Now()}
	if f.log == nil {
		f.log = slog.Default()
	}
	return &rootNode{fixedDir: fixedDir{fs: f}}
}

// MountOptions holds what a mount asks of the kernel beyond the tree.
type MountOptions struct {
	Options
	FsName     string // shown in /proc/mounts, usually the store directory
	AllowOther bool
	// Debug logs every FUSE request (op, node, errno, duration) to
	// Options.Logger at Debug level.
	Debug bool
	// Stats receives the mount's operation counters, which .theater/stats
	// shows; a fresh one when nil.
	Stats *Stats
	// AdaptiveProcs runs the process's Go code on one CPU except while
	// the server is busy (see procs). It sets GOMAXPROCS for the whole
	// process: for a server process of its own, as the mount command is.
	AdaptiveProcs bool

	setProcs func(int) // tests: watches what AdaptiveProcs would set
}

// storeStatfs answers statfs (df) for every file of the mount from the
// file system that holds the store: its size, free space and free inodes,
// so that tools which check for room before they write find the room
// there is.
type storeStatfs struct {
	fuse.RawFileSystem
	dir string
}

func (s storeStatfs) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.dir, &st); err != nil {
		return fuse.ToStatus(err)
	}
	out.FromStatfsT(&st)
	return fuse.OK
}

// Mount serves st at dir until the returned server is unmounted.
func Mount(dir string, st Store, mo MountOptions) (*fuse.Server, error) {
	srv, _, err := mount(dir, st, mo)
	return srv, err
}

// mount is Mount, and gives the tests the node tree.
func mount(dir string, st Store, mo MountOptions) (*fuse.Server, *rootNode, error) {
	if mo.UID == 0 && mo.GID == 0 {
		mo.UID, mo.GID = uint32(os.Getuid()), uint32(os.Getgid())
	}
	zero := time.Duration(0)
	short := labelTimeout
	opts := &fusefs.Options{
		// Node kinds set their own timeouts in Lookup and Getattr; these
		// are the fall-backs, and must be non-nil or nothing is cached.
		EntryTimeout:    &short,
		AttrTimeout:     &short,
		NegativeTimeout: &zero,
		UID:             mo.UID,
		GID:             mo.GID,
		MountOptions: fuse.MountOptions{
			FsName:       mo.FsName,
			Name:         "theater-storefs",
			MaxWrite:     1 << 20,
			MaxReadAhead: 1 << 20,
			AllowOther:   mo.AllowOther,
			DirectMount:  os.Geteuid() == 0,
			// Atomic O_TRUNC: a label is not truncated by a separate setattr
			// before its open. READDIRPLUS_AUTO: a plain `ls` gets plain
			// READDIR, so listing by-hash/ makes no node per blob.
			ExtraCapabilities: fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_READDIRPLUS_AUTO,
			// Every read is answered from a buffer (or by passthrough).
			// With splice on, go-fuse first tries to put each answer
			// through a pipe: a 1 MiB answer fails to fit (and is logged),
			// a smaller one costs a pipe write before the fall-back.
			DisableSplice: true,
			Options:       []string{"nosuid", "nodev"},
		},
	}
	if mo.AllowOther {
		// go-fuse does not add it: without it the kernel checks no
		// permissions at all for other users.
		opts.MountOptions.Options = append(opts.MountOptions.Options, "default_permissions")
	}
	if mo.ReadOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	// The change feed starts before the mount answers, so no change made
	// after Mount returns can be missed.
	w, err := st.Feed()
	if err != nil {
		return nil, nil, err
	}
	root := NewRoot(st, mo.Options).(*rootNode)
	root.fs.labelTTL = liveLabelTimeout
	if mo.Stats == nil {
		mo.Stats = NewStats()
	}
	root.stats = mo.Stats // before NewNodeFS, which calls OnAdd
	// With Debug, statsFS logs each request through slog with its
	// latency; go-fuse's own request dump (MountOptions.Debug) stays off.
	var debugLog *slog.Logger
	if mo.Debug {
		debugLog = root.fs.log
	}
	raw := newStatsFS(storeStatfs{userOnly{fusefs.NewNodeFS(root, opts)}, st.Dir()}, mo.Stats, debugLog)
	server, err := fuse.NewServer(raw, dir, &opts.MountOptions)
	if err != nil {
		w.Close()
		return nil, nil, err
	}
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		// As fusefs.Mount: the serve loop ends by itself when the
		// mount failed.
		w.Close()
		return nil, nil, err
	}
	go root.follow(w)
	stop := make(chan struct{})
	go root.byHash.Operations().(*byHashDir).trim(stop)
	if mo.AdaptiveProcs {
		// After NewServer, which sizes its pool of readers by
		// GOMAXPROCS.
		if p := newProcs(mo.setProcs); p != nil {
			p.log = root.fs.log
			go p.run(stop, procTick)
		}
	}
	go func() {
		server.Wait()
		close(stop)
		w.Close()
		root.fs.releaseAll()
	}()
	return server, root, nil
}
