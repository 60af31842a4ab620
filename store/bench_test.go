package store_test

// Benchmarks of the store's durable write path and its read path.
//
//	go test -run '^$' -bench . ./store/            (or: make bench)
//
// Every benchmark writes to a fresh store on a real disk: a store on tmpfs
// would make fsync free and the numbers meaningless. The directory is
// $BENCH_DIR when set; otherwise os.TempDir(), unless that is tmpfs or ramfs,
// in which case bench/out/ in the repository (ignored by git).
//
// With BENCH_KEEP=1 (as make bench sets it) the stores are left in place
// when each run ends, for the caller to remove once every benchmark is done.
// Deleting thousands of files between runs skews the next run: ext4 without
// a journal (as on the VM these benchmarks were first run on) skips inodes
// deleted in the last minutes when it allocates one, so every file created
// after a mass delete scans past them and costs up to a millisecond.
//
// Every identifier here starts with "bench" so that it cannot collide with
// the helpers other test files of package store_test declare.

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
	"golang.org/x/sys/unix"
)

// benchWriters is how many goroutines store at once in
// BenchmarkConcurrentStore.
const benchWriters = 8

var benchSizes = []struct {
	name string
	size int
}{
	{"4KiB", 4 << 10},
	{"1MiB", 1 << 20},
}

var (
	benchRootOnce sync.Once
	benchRoot     string
	benchRootErr  error
)

// benchBaseDir picks, once per process, the directory benchmark stores go
// under, and says which it is and on what file system.
func benchBaseDir(b *testing.B) string {
	benchRootOnce.Do(func() {
		dir, why := os.Getenv("BENCH_DIR"), "$BENCH_DIR"
		if dir == "" {
			dir, why = os.TempDir(), "os.TempDir()"
			if fs := benchFSType(dir); fs == "tmpfs" || fs == "ramfs" {
				// The test runs in store/; bench/out/ is at the repository root.
				dir, why = filepath.Join("..", "bench", "out"), os.TempDir()+" is "+fs+", so bench/out"
			}
		}
		if benchRootErr = os.MkdirAll(dir, 0o755); benchRootErr != nil {
			return
		}
		if benchRoot, benchRootErr = filepath.Abs(dir); benchRootErr != nil {
			return
		}
		fs := benchFSType(benchRoot)
		fmt.Fprintf(os.Stderr, "bench: stores under %s (%s, %s)\n", benchRoot, why, fs)
		if fs == "tmpfs" || fs == "ramfs" {
			fmt.Fprintf(os.Stderr, "bench: warning: %s is %s: fsync costs nothing there, durable-write figures mean little\n", benchRoot, fs)
		}
		benchSettle(benchRoot)
	})
	if benchRootErr != nil {
		b.Fatalf("benchmark directory: %v", benchRootErr)
	}
	return benchRoot
}

// benchSettle waits (two minutes at most) until making a file in dir costs
// what it usually does. Right after thousands of files were deleted near
// it (by an earlier run's clean-up, say), ext4 without a journal skips
// every inode freed in the last half minute at each new file, which then
// costs up to a millisecond of CPU (for a minute or more here); every store
// figure would measure that.
// The probe's files stay, for the caller's clean-up: removing them would
// start the wait again.
func benchSettle(dir string) {
	probe, err := os.MkdirTemp(dir, "settle-")
	if err != nil {
		return
	}
	const files = 50
	made := 0
	create := func() time.Duration {
		start := time.Now()
		for range files {
			f, err := os.Create(filepath.Join(probe, fmt.Sprint(made)))
			if err != nil {
				return 0
			}
			f.Close()
			made++
		}
		return time.Since(start) / files
	}
	deadline := time.Now().Add(2 * time.Minute)
	for per := create(); per > 200*time.Microsecond; per = create() {
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "bench: warning: a new file in %s still costs %v; the figures will show it\n", dir, per)
			return
		}
		fmt.Fprintf(os.Stderr, "bench: a new file costs %v (inodes freed lately are skipped?); waiting\n", per)
		time.Sleep(5 * time.Second)
	}
}

// benchFSType names the file system dir is on, as far as fsync cost goes.
func benchFSType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch uint32(st.Type) {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.RAMFS_MAGIC:
		return "ramfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.BTRFS_SUPER_MAGIC:
		return "btrfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs type %#x", st.Type)
}

// benchOpen opens a fresh store for one run of a benchmark function; it is
// closed and removed when the run ends.
func benchOpen(b *testing.B, opts store.Options) *store.Store {
	b.Helper()
	dir, err := os.MkdirTemp(benchBaseDir(b), "store-")
	if err != nil {
		b.Fatal(err)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := store.Open(dir, opts)
	if err != nil {
		os.RemoveAll(dir)
		b.Fatal(err)
	}
	b.Cleanup(func() {
		s.Close()
		if os.Getenv("BENCH_KEEP") == "" {
			os.RemoveAll(dir)
		}
	})
	return s
}

// benchContent is a buffer of size random bytes whose first 16 bytes are
// rewritten per op, so that every op stores content never seen before.
type benchContent struct {
	buf []byte
}

func newBenchContent(size int) *benchContent {
	buf := make([]byte, size)
	rand.Read(buf)
	return &benchContent{buf: buf}
}

// next makes the content unique for (writer, op) and returns it.
func (c *benchContent) next(writer, op uint64) []byte {
	binary.LittleEndian.PutUint64(c.buf[0:8], writer)
	binary.LittleEndian.PutUint64(c.buf[8:16], op)
	return c.buf
}

// benchRate reports ops per second alongside ns/op and MB/s.
func benchRate(b *testing.B, unit string) {
	if s := b.Elapsed().Seconds(); s > 0 {
		b.ReportMetric(float64(b.N)/s, unit)
	}
}

// BenchmarkStore: one writer storing new content, durably (temp file,
// fsync, rename, directory fsync).
func BenchmarkStore(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			ctx := context.Background()
			s := benchOpen(b, store.Options{})
			content := newBenchContent(sz.size)
			b.SetBytes(int64(sz.size))
			var op uint64
			for b.Loop() {
				op++
				if _, err := s.Store(ctx, content.next(0, op)); err != nil {
					b.Fatal(err)
				}
			}
			benchRate(b, "stores/s")
		})
	}
}

// BenchmarkGet: reading whole blobs the store wrote (verified by
// construction, so no hashing), round robin over a set of blobs.
func BenchmarkGet(b *testing.B) {
	for _, sz := range benchSizes {
		b.Run(sz.name, func(b *testing.B) {
			ctx := context.Background()
			s := benchOpen(b, store.Options{})
			n := max(8, min(1024, (64<<20)/sz.size)) // at most 64 MiB of blobs
			content := newBenchContent(sz.size)
			hashes := make([]store.Hash, n)
			for i := range hashes {
				h, err := s.Store(ctx, content.next(1, uint64(i)))
				if err != nil {
					b.Fatal(err)
				}
				hashes[i] = h
			}
			b.SetBytes(int64(sz.size))
			i := 0
			for b.Loop() {
				got, err := s.Get(ctx, hashes[i%n])
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != sz.size {
					b.Fatalf("got %d bytes, want %d", len(got), sz.size)
				}
				i++
			}
			benchRate(b, "gets/s")
		})
	}
}

// BenchmarkConcurrentStore: 8 writers storing new 4 KiB blobs at once,
// durably, with the owner batching the fsyncs of commits that arrive
// together (group-commit) and without (one-fsync-per-blob: the owner fsyncs
// each blob and data/ in turn, the baseline Options.NoGroupCommit keeps).
func BenchmarkConcurrentStore(b *testing.B) {
	for _, mode := range []struct {
		name string
		opts store.Options
	}{
		{"group-commit", store.Options{}},
		{"one-fsync-per-blob", store.Options{NoGroupCommit: true}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			benchConcurrentStore(b, mode.opts, benchWriters, 4<<10)
		})
	}
}

func benchConcurrentStore(b *testing.B, opts store.Options, writers, size int) {
	s := benchOpen(b, opts)
	contents := benchContents(writers, size)
	b.SetBytes(int64(size))
	b.ResetTimer()
	benchStoreConcurrently(b, s, contents, b.N)
	b.StopTimer()
	benchRate(b, "stores/s")
}

// BenchmarkGroupCommitPaired: the two modes of BenchmarkConcurrentStore in
// turn within each run, the order alternating from run to run, so that
// both meet the disk in the same state. go test runs every count of one
// sub-benchmark before the next one's, and on the VM these figures come
// from the disk's flush latency drifts by up to 2x within a minute (after
// the gigabytes BenchmarkStore/1MiB writes, say). Each run reports both
// rates and their ratio (x); one fsync per blob stores a third as many
// blobs, to take about as long.
func BenchmarkGroupCommitPaired(b *testing.B) {
	contents := benchContents(benchWriters, 4<<10)
	rate := func(opts store.Options, ops int) float64 {
		s := benchOpen(b, opts)
		start := time.Now()
		benchStoreConcurrently(b, s, contents, ops)
		return float64(ops) / time.Since(start).Seconds()
	}
	var group, fsync float64
	modes := []func(){
		func() { group = rate(store.Options{}, b.N) },
		func() { fsync = rate(store.Options{NoGroupCommit: true}, max(b.N/3, benchWriters)) },
	}
	if benchPairs.Add(1)%2 == 0 {
		modes[0], modes[1] = modes[1], modes[0]
	}
	b.ResetTimer()
	for _, m := range modes {
		m()
	}
	b.StopTimer()
	b.ReportMetric(group, "group-stores/s")
	b.ReportMetric(fsync, "fsync-stores/s")
	b.ReportMetric(group/fsync, "x")
}

var benchPairs atomic.Int64 // runs of BenchmarkGroupCommitPaired so far

func benchContents(writers, size int) []*benchContent {
	contents := make([]*benchContent, writers)
	for w := range contents {
		contents[w] = newBenchContent(size)
	}
	return contents
}

// benchStoreConcurrently stores ops new blobs, one writer per content.
func benchStoreConcurrently(b *testing.B, s *store.Store, contents []*benchContent, ops int) {
	ctx := context.Background()
	var next atomic.Int64 // ops handed out so far
	var wg sync.WaitGroup
	errs := make(chan error, len(contents))
	for w := range contents {
		wg.Go(func() {
			for {
				op := next.Add(1)
				if op > int64(ops) {
					return
				}
				if _, err := s.Store(ctx, contents[w].next(uint64(w), uint64(op))); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}
