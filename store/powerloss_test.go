package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/theater-storefs/theater-storefs/store"
)

// The power-loss test cuts the power under writers, as far as one machine
// can: the store lives on an ext4 made in a file and mounted on a loop
// device; at a random moment the file system is shut down (ext4's
// EXT4_IOC_SHUTDOWN, without flushing its journal: it writes nothing more,
// and what it had not written is dropped, as a power cut drops the page
// cache), and the file is copied. The copy is repaired as after any crash
// (e2fsck -y), mounted and opened; every store and label acknowledged
// before the cut must be there, and every blob in data/ whole.
//
// What the block device's own buffers held when the ext4 went down (its
// metadata, on an ext4 without a journal) may still be written while the
// copy is taken, in any order: a crash can leave any of those writes done
// and the others not, so the copy is still a state a crash can leave. The
// disk's cache is not modelled: what reached the device stays.
//
// On an ext4 without a journal a crash can lose names, whatever the store
// does: a directory that grew or split while its blocks were written in
// some order comes back from e2fsck with entries lost, their files put in
// lost+found. Stores there are checked for their content: in data/, or in
// lost+found, whole. Labels are checked on an ext4 with a journal.

// ext4IocShutdown is EXT4_IOC_SHUTDOWN, _IOR('X', 125, __u32), and
// ext4GoingNoLogFlush its flag that skips the journal's flush.
const (
	ext4IocShutdown     = 0x8004587D
	ext4GoingNoLogFlush = 2
)

// A kind of power cut.
type plMode struct {
	name    string
	journal bool
	claims  bool
}

func TestPowerLoss(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to mount a loop device")
	}
	for _, tool := range []string{"mkfs.ext4", "e2fsck", "mount", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skipf("needs loop devices: %v", err)
	}
	cuts := 8
	if os.Getenv("THEATER_STOREFS_LONG") != "" {
		cuts = 40
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("THEATER_STOREFS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with THEATER_STOREFS_SEED=%d)", seed, seed)
	for _, mode := range []plMode{
		{name: "ext4 with a journal", journal: true, claims: true},
		{name: "ext4 without a journal", claims: true},
		{name: "without claims, ext4 without a journal"},
	} {
		t.Run(mode.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(seed, uint64(len(mode.name))))
			var sum plFigures
			for cut := range cuts {
				sum.add(powerCut(t, r, mode, cut))
			}
			t.Logf("%d cuts: %d acknowledged writes, %d lost, %d found in lost+found only; %d unacknowledged ones found too; %d blobs put back from tmp/ by Open",
				cuts, sum.acked, sum.lost, sum.lostFound, sum.unacked, sum.rescued)
		})
	}
}

// plFigures counts, over cuts, the writes acknowledged, those of them lost
// and those found in lost+found only, the stores found that were not
// acknowledged, and the blobs Open put back from claimed spools.
type plFigures struct{ acked, lost, lostFound, unacked, rescued int }

func (f *plFigures) add(g plFigures) {
	f.acked += g.acked
	f.rescued += g.rescued
	f.lost += g.lost
	f.lostFound += g.lostFound
	f.unacked += g.unacked
}

// powerCut runs writers on a fresh file system until a cut, then checks
// the copy taken at the cut.
func powerCut(t *testing.T, r *rand.Rand, mode plMode, cut int) (fig plFigures) {
	work := t.TempDir()
	img := filepath.Join(work, "disk.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 128<<20); err != nil {
		t.Fatal(err)
	}
	features := "has_journal"
	if !mode.journal {
		features = "^has_journal"
	}
	run(t, "mkfs.ext4", "-q", "-F", "-O", features, img)
	mnt := filepath.Join(work, "mnt")
	mountLoop(t, img, mnt)
	dir := filepath.Join(mnt, "store")

	s, err := store.Open(dir, store.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if !mode.claims {
		store.RefuseClaims(s)
	}
	w := &plWriters{blobs: map[store.Hash]bool{}, labels: map[string][]store.Hash{}}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var once sync.Once
	halt := func() { // also if the test fails half-way: nothing is left open
		once.Do(func() {
			stop()
			wg.Wait()
			s.Close()
		})
	}
	t.Cleanup(halt)
	for i := range 8 {
		wr := rand.New(rand.NewPCG(r.Uint64(), uint64(i)))
		label := ""
		if mode.journal && i%4 == 3 {
			label = fmt.Sprintf("pl/w%d", i)
		}
		wg.Go(func() { w.write(ctx, t, s, wr, i, label) })
	}
	if !mode.journal {
		// Without a journal, metadata reaches the disk in any order,
		// whenever the kernel writes it back: tmp/ is written back
		// early, so that a spool's name gone from it before its link
		// into data/ is durable shows.
		wg.Go(func() { writeBack(ctx, filepath.Join(dir, store.TmpDir)) })
	}
	time.Sleep(time.Duration(50+r.IntN(250)) * time.Millisecond)

	// The cut: the file system writes nothing more, and the device is
	// copied.
	copied := filepath.Join(work, "cut.img")
	if err := w.cutAt(mnt, img, copied); err != nil {
		t.Fatal(err)
	}
	halt()
	run(t, "umount", mnt)
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(copied)

	// Power back: the copy repaired, mounted (a journal is replayed) and
	// opened.
	repairs := fsck(t, copied)
	defer func() {
		if t.Failed() {
			t.Logf("cut %d: e2fsck said:\n%s", cut, repairs)
		}
	}()
	mountLoop(t, copied, mnt)
	defer run(t, "umount", mnt)
	rescued := &countRecords{msg: "recovered a blob from an interrupted commit"}
	s, err = store.Open(dir, store.Options{Logger: slog.New(rescued)})
	if err != nil {
		t.Fatalf("cut %d: Open after the cut: %v", cut, err)
	}
	defer s.Close()
	tmpSpools(t, s, dir) // Open's leftovers are done with
	fig.rescued = int(rescued.n.Load())
	names := dataNames(t, dir)
	have := map[string]bool{}
	for _, n := range names {
		b, err := os.ReadFile(filepath.Join(dir, "data", n))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha(b); h.String() != n {
			t.Errorf("cut %d: data/%s holds %d bytes hashing to %s: a torn blob", cut, n, len(b), h)
		}
		have[n] = true
	}
	// Names e2fsck took from data/ itself (a directory block past the
	// end, its index cleared) are the file system's loss, not the store's:
	// those blobs must be whole in lost+found.
	lostFound := hashesIn(t, filepath.Join(mnt, "lost+found"))
	dataDamaged := strings.Contains(repairs, "(/store/data)")
	if len(w.blobs) == 0 {
		t.Errorf("cut %d: no store acknowledged before the cut", cut)
	}
	for h := range w.blobs {
		fig.acked++
		switch {
		case have[h.String()]:
		case dataDamaged && lostFound[h]:
			fig.lostFound++
		default:
			fig.lost++
			t.Errorf("cut %d: acknowledged store of %s lost", cut, h)
		}
	}
	for name, refs := range w.labels {
		got, err := s.GetByLabel(context.Background(), name)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			t.Errorf("cut %d: label %s: %v", cut, name, err)
			continue
		}
		for _, h := range refs {
			fig.acked++
			if !slices.Contains(got, h) {
				fig.lost++
				t.Errorf("cut %d: acknowledged append of %s to %s lost (label holds %v)", cut, h, name, got)
			}
		}
		for _, h := range got {
			if !have[h.String()] {
				t.Errorf("cut %d: label %s names %s, not in data/", cut, name, h)
			}
		}
	}
	if left := tmpSpools(t, s, dir); len(left) > 0 {
		t.Errorf("cut %d: tmp/ holds %v after Open", cut, left)
	}
	if rep, err := s.Verify(context.Background(), nil); err != nil {
		t.Errorf("cut %d: Verify after the cut: %v", cut, err)
	} else if len(rep.Problems) > 0 {
		t.Errorf("cut %d: Verify after the cut: %v", cut, rep.Problems)
	}
	labelled := map[store.Hash]bool{}
	for _, refs := range w.labels {
		for _, h := range refs {
			labelled[h] = true
		}
	}
	for _, n := range names {
		if h, err := store.ParseHash(n); err == nil && !w.blobs[h] && !labelled[h] {
			fig.unacked++
		}
	}
	return fig
}

// countRecords is a log handler that counts the records with message msg.
type countRecords struct {
	msg string
	n   atomic.Int64
}

func (c *countRecords) Enabled(context.Context, slog.Level) bool { return true }
func (c *countRecords) WithAttrs([]slog.Attr) slog.Handler       { return c }
func (c *countRecords) WithGroup(string) slog.Handler            { return c }
func (c *countRecords) Handle(_ context.Context, r slog.Record) error {
	if r.Message == c.msg {
		c.n.Add(1)
	}
	return nil
}

// hashesIn hashes the regular files in dir.
func hashesIn(t *testing.T, dir string) map[store.Hash]bool {
	t.Helper()
	out := map[store.Hash]bool{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[sha(b)] = true
	}
	return out
}

// plWriters records what the writers had acknowledged before the cut.
type plWriters struct {
	mu     sync.Mutex
	cut    bool
	blobs  map[store.Hash]bool
	labels map[string][]store.Hash
}

// cutAt shuts the ext4 mounted at mnt down without flushing its journal,
// and copies its device img to copied. Acknowledgements from then on are
// not counted.
func (w *plWriters) cutAt(mnt, img, copied string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	fs, err := os.Open(mnt)
	if err != nil {
		return err
	}
	defer fs.Close()
	flags := uint32(ext4GoingNoLogFlush)
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, fs.Fd(), ext4IocShutdown, uintptr(unsafe.Pointer(&flags))); errno != 0 {
		return fmt.Errorf("EXT4_IOC_SHUTDOWN: %w", errno)
	}
	w.cut = true
	return copyFile(img, copied)
}

// writeBack fsyncs the directory dir every millisecond until ctx ends.
func writeBack(ctx context.Context, dir string) {
	for ctx.Err() == nil {
		if d, err := os.Open(dir); err == nil {
			d.Sync()
			d.Close()
		}
		time.Sleep(time.Millisecond)
	}
}

// write stores new content until ctx ends: label-less, or appended to
// label.
func (w *plWriters) write(ctx context.Context, t *testing.T, s *store.Store, r *rand.Rand, id int, label string) {
	for seq := 0; ctx.Err() == nil; seq++ {
		content := fmt.Appendf(nil, "writer %d #%d %x\n", id, seq, r.Uint64())
		switch n := r.IntN(100); {
		case n < 5:
			content = append(content, bytes.Repeat([]byte{'x'}, 200<<10)...)
		case n < 50:
			content = append(content, bytes.Repeat([]byte{'y'}, r.IntN(8<<10))...)
		}
		var h store.Hash
		var err error
		if label != "" {
			h, err = s.PutAtLabel(ctx, label, content)
		} else {
			h, err = s.Store(ctx, content)
		}
		w.mu.Lock()
		cut := w.cut
		if err == nil && !cut {
			if label != "" {
				w.labels[label] = append(w.labels[label], h)
			} else {
				w.blobs[h] = true
			}
		}
		w.mu.Unlock()
		if err != nil {
			if !cut {
				// The cut sets w.cut under w.mu right after the
				// shutdown: an error seen before it is the store's.
				t.Errorf("writer %d, before the cut: %v", id, err)
			}
			return
		}
	}
}

// mountLoop mounts the file system in img at mnt, on a loop device that
// goes with the unmount; one left mounted by a failed test goes at its end.
func mountLoop(t *testing.T, img, mnt string) {
	t.Helper()
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run(t, "mount", "-o", "loop", img, mnt)
	t.Cleanup(func() {
		var st, parent unix.Stat_t
		if unix.Stat(mnt, &st) == nil && unix.Stat(filepath.Dir(mnt), &parent) == nil && st.Dev != parent.Dev {
			exec.Command("umount", "-l", mnt).Run()
		}
	})
}

// fsck repairs the file system in img as its administrator would after a
// crash (e2fsck -f -y), fails the test if it cannot, and returns what it
// said.
func fsck(t *testing.T, img string) string {
	t.Helper()
	out, err := exec.Command("e2fsck", "-f", "-y", img).CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !(errors.As(err, &exit) && exit.ExitCode() == 1) {
		t.Fatalf("e2fsck -f -y: %v\n%s", err, out)
	}
	return string(out)
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
