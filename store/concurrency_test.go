package store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

func TestConcurrentWriters(t *testing.T) {
	for _, mode := range []struct {
		name string
		opts store.Options
	}{
		{"group commit", store.Options{}},
		{"no group commit", store.Options{NoGroupCommit: true}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			s := openAt(t, dir, mode.opts)
			const goroutines, rounds = 16, 12
			content := func(g, i int) []byte {
				// Some contents are shared between goroutines (dedup under
				// contention), most are unique; sizes vary.
				if i%5 == 0 {
					return []byte(fmt.Sprintf("shared content %d", i))
				}
				return bytes.Repeat([]byte(fmt.Sprintf("g%d i%d;", g, i)), 1+(g*i)%3000)
			}
			var wg sync.WaitGroup
			errs := make(chan error, goroutines*rounds*8)
			replaced := make([][]store.Hash, goroutines) // what each goroutine put at "replaced"
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fail := func(err error) { errs <- fmt.Errorf("goroutine %d: %w", g, err) }
					own := fmt.Sprintf("own/%d", g)
					for i := range rounds {
						c := content(g, i)
						h, err := s.PutAtLabel(bg, own, c)
						if err != nil {
							fail(err)
							continue
						}
						if _, err := s.PutAtLabel(bg, "shared", c); err != nil {
							fail(err)
						}
						if err := s.Label(bg, "labelled/all", h); err != nil {
							fail(err)
						}
						rh, err := s.ReplaceContentAtLabel(bg, "replaced", c)
						if err != nil {
							fail(err)
						} else {
							replaced[g] = append(replaced[g], rh)
						}
						// A streaming writer with out-of-order writes.
						sp, err := s.NewSpool()
						if err != nil {
							fail(err)
							continue
						}
						half := int64(len(c) / 2)
						sp.WriteAt(c[half:], half)
						sp.WriteAt(c[:half], 0)
						if sh, err := sp.Commit(bg, "spooled", store.LabelReplace); err != nil || sh != h {
							fail(fmt.Errorf("spool commit %s, %v; want %s", sh, err, h))
						}
						if got, err := s.Get(bg, h); err != nil || !bytes.Equal(got, c) {
							fail(fmt.Errorf("Get(%s): %d bytes, %v", h, len(got), err))
						}
						if i%7 == 3 {
							if err := s.RemoveFromLabel(bg, own, h); err != nil {
								fail(err)
							}
						}
						if _, err := s.ListLabels(bg); err != nil {
							fail(err)
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if t.Failed() {
				return
			}

			// Each goroutine's own label holds its refs in its order.
			all := map[store.Hash]bool{}
			for g := range goroutines {
				var want []store.Hash
				for i := range rounds {
					h := sha(content(g, i))
					all[h] = true
					if i%7 != 3 {
						want = append(want, h)
					}
				}
				wantRefs(t, s, fmt.Sprintf("own/%d", g), want...)
			}
			// Shared labels hold every distinct content exactly once.
			for _, name := range []string{"shared", "labelled/all"} {
				refs := mustRefs(t, s, name)
				set := map[store.Hash]bool{}
				for _, h := range refs {
					if set[h] {
						t.Fatalf("%s holds %s twice", name, h)
					}
					set[h] = true
				}
				if len(set) != len(all) {
					t.Fatalf("%s holds %d refs, want %d", name, len(set), len(all))
				}
				for h := range all {
					if !set[h] {
						t.Fatalf("%s lacks %s", name, h)
					}
				}
			}
			// The replaced label holds exactly one ref, the last some
			// goroutine wrote.
			refs := mustRefs(t, s, "replaced")
			if len(refs) != 1 {
				t.Fatalf("replaced holds %d refs", len(refs))
			}
			var lasts []store.Hash
			for _, r := range replaced {
				lasts = append(lasts, r[len(r)-1])
			}
			if !slices.Contains(lasts, refs[0]) {
				t.Fatalf("replaced holds %s, not any goroutine's last write", refs[0])
			}
			// Every label names complete blobs whose content hashes true.
			labels, err := s.ListLabels(bg)
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range labels {
				for _, h := range mustRefs(t, s, name) {
					b, err := s.Get(bg, h)
					if err != nil || sha(b) != h {
						t.Fatalf("label %s: blob %s: %v", name, h, err)
					}
				}
			}
			if n := len(dataNames(t, dir)); n != len(all) {
				t.Fatalf("data/ holds %d blobs, want %d", n, len(all))
			}
			rep, err := s.Verify(bg, nil)
			if err != nil || len(rep.Problems) != 0 {
				t.Fatalf("Verify: %v, %v", rep.Problems, err)
			}
			if left := tmpSpools(t, s, dir); len(left) != 0 {
				t.Fatalf("tmp/ keeps %v", left)
			}
		})
	}
}

// Two Store instances on one directory (two processes, in effect) both
// write; neither loses the other's blobs.
func TestTwoInstancesOneDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	a := openAt(t, dir, store.Options{})
	b := openAt(t, dir, store.Options{})
	var wg sync.WaitGroup
	for i, s := range []*store.Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				if _, err := s.PutAtLabel(bg, fmt.Sprintf("inst%d", i), []byte(fmt.Sprintf("%d-%d", i, j))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	for i := range 2 {
		if n := len(mustRefs(t, a, fmt.Sprintf("inst%d", i))); n != 50 {
			t.Fatalf("inst%d holds %d refs", i, n)
		}
	}
	if n := len(dataNames(t, dir)); n != 100 {
		t.Fatalf("data/ holds %d", n)
	}
}

// opsAll runs every operation once with ctx and returns the errors by name.
func opsAll(ctx context.Context, s *store.Store, h store.Hash) map[string]error {
	errs := map[string]error{}
	_, errs["Store"] = s.Store(ctx, []byte("ctx content"))
	_, errs["Get"] = s.Get(ctx, h)
	_, _, errs["Open"] = s.Open(ctx, h)
	_, errs["Exists"] = s.Exists(ctx, h)
	_, errs["Stat"] = s.Stat(ctx, h)
	errs["Label"] = s.Label(ctx, "ctx", h)
	_, errs["GetByLabel"] = s.GetByLabel(ctx, "l")
	errs["RemoveLabel"] = s.RemoveLabel(ctx, "l")
	errs["RemoveFromLabel"] = s.RemoveFromLabel(ctx, "l", h)
	_, errs["PutAtLabel"] = s.PutAtLabel(ctx, "ctx", []byte("ctx put"))
	_, errs["ReplaceContentAtLabel"] = s.ReplaceContentAtLabel(ctx, "ctx", []byte("ctx replace"))
	errs["ReplaceAtLabel"] = s.ReplaceAtLabel(ctx, "ctx", h)
	_, errs["ListLabels"] = s.ListLabels(ctx)
	_, errs["ListAllContent"] = s.ListAllContent(ctx)
	_, errs["CalculateTotalSize"] = s.CalculateTotalSize(ctx)
	_, errs["ResolveReference"] = s.ResolveReference(ctx, "store:l")
	errs["RenameLabel"] = s.RenameLabel(ctx, "l", "m")
	errs["MakeNamespace"] = s.MakeNamespace(ctx, "ns")
	errs["RemoveNamespace"] = s.RemoveNamespace(ctx, "ns")
	_, errs["ReadNamespace"] = s.ReadNamespace(ctx, "")
	_, errs["StatLabel"] = s.StatLabel(ctx, "l")
	_, errs["IsNamespace"] = s.IsNamespace(ctx, "l")
	_, _, errs["Put"] = s.Put(ctx, strings.NewReader("ctx stream"))
	_, errs["Verify"] = s.Verify(ctx, nil)
	_, errs["GC"] = s.GC(ctx, store.GCOptions{Grace: -1})
	_, _, errs["Chain"] = s.Chain(ctx, "a1b2c3d4-0000-4000-8000-000000000000")
	if sp, err := s.NewSpool(); err != nil {
		errs["Spool.Commit"] = err
	} else {
		sp.Write([]byte("ctx spool"))
		_, errs["Spool.Commit"] = sp.Commit(ctx, "ctx", store.LabelAppend)
	}
	return errs
}

func TestCancelledContext(t *testing.T) {
	s, dir := newStore(t)
	h, _ := s.PutAtLabel(bg, "l", []byte("labelled"))
	before := treeSnapshot(t, filepath.Join(dir, store.DataDir))
	labelsBefore := treeSnapshot(t, filepath.Join(dir, store.LabelsDir))
	ctx, cancel := context.WithCancel(bg)
	cancel()
	// Repeated: a cancelled request must fail every time, not by chance.
	for range 30 {
		for op, err := range opsAll(ctx, s, h) {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("%s with a cancelled context: %v, want context.Canceled", op, err)
			}
		}
	}
	if d := diffSnapshots(before, treeSnapshot(t, filepath.Join(dir, store.DataDir))); len(d) != 0 {
		t.Fatalf("cancelled operations changed data/: %v", d)
	}
	if d := diffSnapshots(labelsBefore, treeSnapshot(t, filepath.Join(dir, store.LabelsDir))); len(d) != 0 {
		t.Fatalf("cancelled operations changed labels/: %v", d)
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ keeps %v", left)
	}
	// The store still works.
	if b, err := s.Get(bg, h); err != nil || string(b) != "labelled" {
		t.Fatalf("Get after cancelled calls: %q, %v", b, err)
	}
}

// A context that ends while a blob is being verified stops the hash, and no
// verdict is recorded from the partial read.
func TestContextEndsVerification(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	big := bytes.Repeat([]byte("0123456789abcdef"), 2<<20) // 32 MiB
	s := openAt(t, dir, store.Options{})
	h, err := s.Store(bg, big)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Forget the commit-time verdict so Open must hash.
	if err := os.Remove(filepath.Join(dir, store.TmpDir, "verified")); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir, store.Options{})
	// Too short to hash 32 MiB: the deadline passes before the owner
	// answers or while hashing; either way Open reports it.
	ctx, cancel := context.WithTimeout(bg, 2*time.Millisecond)
	defer cancel()
	_, _, err = s2.Open(ctx, h)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Open with a short deadline: %v", err)
	}
	f, _, err := s2.Open(bg, h)
	if err != nil {
		t.Fatalf("Open after an interrupted verification: %v", err)
	}
	f.Close()
	s2.Close()
	if v := readVerdicts(t, dir); v[h.String()] != "1" {
		t.Fatalf("verdicts = %v", v)
	}
}

func TestClose(t *testing.T) {
	s, dir := newStore(t)
	h, _ := s.PutAtLabel(bg, "l", []byte("before close"))
	sp, err := s.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	sp.Write([]byte("spooled before close"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	for op, err := range opsAll(bg, s, h) {
		if !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", op, err)
		}
	}
	if _, err := s.NewSpool(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("NewSpool after Close: %v, want ErrClosed", err)
	}
	if _, err := sp.Commit(bg, "l", store.LabelAppend); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Commit of an earlier spool after Close: %v, want ErrClosed", err)
	}
	if ok := slices.Contains(dataNames(t, dir), shaStr("spooled before close").String()); ok {
		t.Error("a commit refused at Close stored its blob")
	}
	// What was stored before Close is there for the next Open, and any
	// spool file the closed store could not remove is cleared then.
	s2 := openAt(t, dir, store.Options{})
	wantRefs(t, s2, "l", h)
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Errorf("tmp/ keeps %v", left)
	}
}

// Close while operations are in flight: every caller gets an answer (a
// result or ErrClosed), none hangs, nothing panics. Many goroutines keep the
// request channel busy so that some requests race with Close.
func TestCloseDuringOperations(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	for iter := range 150 {
		// Odd iterations leave the fsyncs to the owner, so writers reach
		// the request channel faster.
		s, err := store.Open(dir, store.Options{Logger: quiet, NoGroupCommit: iter%2 == 1})
		if err != nil {
			t.Fatal(err)
		}
		h := mustStore(t, s, "x")
		var wg sync.WaitGroup
		var mu sync.Mutex
		var stored []store.Hash // new content whose Store succeeded
		for g := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					var err error
					switch {
					case g%8 == 0: // writers: the commit path (dedup)
						_, err = s.Store(bg, []byte(fmt.Sprint(i%3)))
					case g%8 == 4: // writers of new content, in the syncer's groups
						var sum store.Hash
						sum, err = s.Store(bg, []byte(fmt.Sprint(iter, g, i)))
						if err == nil {
							mu.Lock()
							stored = append(stored, sum)
							mu.Unlock()
						}
					case g%16 == 1:
						err = s.Label(bg, fmt.Sprint("l", g), h)
					case g%16 == 2:
						_, err = s.Get(bg, h)
					default:
						_, err = s.Exists(bg, h)
					}
					if errors.Is(err, store.ErrClosed) {
						return
					}
					if err != nil {
						t.Errorf("operation during Close: %v", err)
						return
					}
				}
			}()
		}
		time.Sleep(time.Duration(iter%8) * 250 * time.Microsecond)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("iteration %d: an operation hangs after Close", iter)
		}
		if t.Failed() {
			return
		}
		// What Close let finish is there. (What it cut short may leave a
		// spool in tmp/ until the next Open, as a crash would.)
		for _, sum := range stored {
			if _, err := os.Stat(filepath.Join(dir, store.DataDir, sum.String())); err != nil {
				t.Fatalf("iteration %d: a store that succeeded before Close is gone: %v", iter, err)
			}
		}
	}
}

// Close called from several goroutines at once (an unmount racing a signal
// handler) closes once and returns to all of them.
func TestConcurrentClose(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	for range 300 {
		s, err := store.Open(dir, store.Options{Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				if err := s.Close(); err != nil {
					t.Error(err)
				}
			}()
		}
		close(start)
		wg.Wait()
	}
}
