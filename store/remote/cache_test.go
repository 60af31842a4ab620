package remote

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// content returns n bytes and their hash.
func content(t *testing.T, seed byte, n int) ([]byte, store.Hash) {
	t.Helper()
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i)
	}
	h, err := store.Sum(b)
	if err != nil {
		t.Fatal(err)
	}
	return b, h
}

func serve(b []byte, fetches *atomic.Int64) func(context.Context, io.Writer) (time.Time, error) {
	return func(_ context.Context, w io.Writer) (time.Time, error) {
		fetches.Add(1)
		_, err := w.Write(b)
		return time.Unix(1700000000, 0), err
	}
}

func TestCacheBoundAndReopen(t *testing.T) {
	dir := t.TempDir()
	c, err := openCache(dir, 250)
	if err != nil {
		t.Fatal(err)
	}
	var fetches atomic.Int64
	var hashes []store.Hash
	var bodies [][]byte
	for i := range 4 {
		b, h := content(t, byte(i), 100)
		hashes, bodies = append(hashes, h), append(bodies, b)
		f, err := c.open(context.Background(), h, serve(b, &fetches))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(f)
		f.Close()
		if string(got) != string(b) {
			t.Fatalf("blob %d read back %d bytes", i, len(got))
		}
		if c.size() > 250 {
			t.Fatalf("after %d blobs of 100 bytes the cache holds %d, over 250", i+1, c.size())
		}
	}
	if fetches.Load() != 4 {
		t.Fatalf("%d fetches of 4 new blobs", fetches.Load())
	}
	// The two newest are cached: opening them again fetches nothing.
	for _, i := range []int{3, 2} {
		f, err := c.open(context.Background(), hashes[i], serve(bodies[i], &fetches))
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	if fetches.Load() != 4 {
		t.Fatalf("reopening cached blobs fetched them again (%d fetches)", fetches.Load())
	}
	if fi, err := os.Stat(filepath.Join(dir, hashes[2].String())); err != nil || fi.ModTime().Unix() != 1700000000 {
		t.Fatalf("a cached copy's time: %v, %v", fi, err)
	}
	// A second process may not use the cache; after close, a new one
	// takes the copies there and clears a half-written download.
	if _, err := openCache(dir, 250); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second user of the cache: %v", err)
	}
	c.close()
	os.WriteFile(filepath.Join(dir, ".fetch-123"), []byte("half"), 0o600)
	c2, err := openCache(dir, 250)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.close()
	if c2.size() != 200 {
		t.Fatalf("the reopened cache holds %d bytes, want 200", c2.size())
	}
	if _, err := os.Stat(filepath.Join(dir, ".fetch-123")); !os.IsNotExist(err) {
		t.Fatalf("a half-written download survived: %v", err)
	}
	// A copy torn since it was verified (a crash) is caught on its
	// first open after the start, and fetched again.
	if err := os.WriteFile(filepath.Join(dir, hashes[3].String()), []byte("torn"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := fetches.Load()
	f, err := c2.open(context.Background(), hashes[3], serve(bodies[3], &fetches))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if string(got) != string(bodies[3]) || fetches.Load() != before+1 {
		t.Fatalf("a torn cached copy: read %q, %d fetches", got, fetches.Load()-before)
	}
}

func TestCacheRefusesCorrupt(t *testing.T) {
	dir := t.TempDir()
	c, err := openCache(dir, 1000)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	_, h := content(t, 1, 100)
	wrong, _ := content(t, 2, 100)
	var fetches atomic.Int64
	if _, err := c.open(context.Background(), h, serve(wrong, &fetches)); !errors.Is(err, store.ErrCorrupt) {
		t.Fatalf("a download that does not hash to its name: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 { // .lock
		t.Fatalf("a refused download left %d files", len(ents)-1)
	}
	if c.size() != 0 {
		t.Fatalf("a refused download counted %d bytes", c.size())
	}
}

// TestCacheOneFetch: openers of one blob at once share one download.
func TestCacheOneFetch(t *testing.T) {
	c, err := openCache(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	b, h := content(t, 3, 64<<10)
	var fetches atomic.Int64
	release := make(chan struct{})
	slow := func(ctx context.Context, w io.Writer) (time.Time, error) {
		<-release
		return serve(b, &fetches)(ctx, w)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			f, err := c.open(context.Background(), h, slow)
			if err == nil {
				var got []byte
				got, err = io.ReadAll(f)
				f.Close()
				if err == nil && len(got) != len(b) {
					err = errors.New("short read")
				}
			}
			errs <- err
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if fetches.Load() != 1 {
		t.Fatalf("8 openers at once fetched %d times", fetches.Load())
	}
}

// TestCacheLargerThanBound: a blob over the whole bound is served from
// its open file and not kept.
func TestCacheLargerThanBound(t *testing.T) {
	dir := t.TempDir()
	c, err := openCache(dir, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	b, h := content(t, 4, 300)
	var fetches atomic.Int64
	f, err := c.open(context.Background(), h, serve(b, &fetches))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, _ := io.ReadAll(f); len(got) != 300 {
		t.Fatalf("read %d of 300 bytes", len(got))
	}
	if c.size() != 0 {
		t.Fatalf("the cache counts %d bytes", c.size())
	}
	if _, err := os.Stat(filepath.Join(dir, h.String())); !os.IsNotExist(err) {
		t.Fatalf("a blob over the bound was kept: %v", err)
	}
}
