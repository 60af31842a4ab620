// Package storetest is the conformance suite every store.Backend passes:
// Theater's ContentStore semantics, checked the same way on the local
// directory and on a bucket.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"

	"github.com/theater-storefs/theater-storefs/store"
)

// Open returns a new, empty store for one test; the test's cleanup
// closes it.
type Open func(t *testing.T) store.Backend

// Run runs the suite, each case on a store of its own.
func Run(t *testing.T, open Open) {
	cases := []struct {
		name string
		fn   func(t *testing.T, b store.Backend)
	}{
		{"StoreGet", testStoreGet},
		{"Dedup", testDedup},
		{"Missing", testMissing},
		{"LabelAppends", testLabelAppends},
		{"RemoveFromLabel", testRemoveFromLabel},
		{"RemoveLabel", testRemoveLabel},
		{"PutAtLabel", testPutAtLabel},
		{"Replace", testReplace},
		{"SetLabel", testSetLabel},
		{"ListLabels", testListLabels},
		{"Namespaces", testNamespaces},
		{"TotalSize", testTotalSize},
		{"ResolveReference", testResolveReference},
		{"InvalidNames", testInvalidNames},
		{"Collision", testCollision},
		{"Stream", testStream},
		{"ConcurrentAppends", testConcurrentAppends},
		{"ConcurrentStores", testConcurrentStores},
		{"Closed", testClosed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(t, open(t))
		})
	}
}

var ctx = context.Background()

// blob is content and its known hash.
func blob(t *testing.T, s string) ([]byte, store.Hash) {
	t.Helper()
	h, err := store.Sum([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s), h
}

func put(t *testing.T, b store.Backend, s string) store.Hash {
	t.Helper()
	content, want := blob(t, s)
	h, err := b.Store(ctx, content)
	if err != nil {
		t.Fatalf("Store(%q): %v", s, err)
	}
	if h != want {
		t.Fatalf("Store(%q) = %s, want %s", s, h, want)
	}
	return h
}

func refs(t *testing.T, b store.Backend, name string) []store.Hash {
	t.Helper()
	got, err := b.GetByLabel(ctx, name)
	if err != nil {
		t.Fatalf("GetByLabel(%q): %v", name, err)
	}
	return got
}

func wantRefs(t *testing.T, b store.Backend, name string, want ...store.Hash) {
	t.Helper()
	if got := refs(t, b, name); !slices.Equal(got, want) {
		t.Fatalf("GetByLabel(%q) = %v, want %v", name, got, want)
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: error %v, want %v", what, err, want)
	}
}

func testStoreGet(t *testing.T, b store.Backend) {
	h := put(t, b, "hello")
	got, err := b.Get(ctx, h)
	if err != nil || string(got) != "hello" {
		t.Fatalf("Get = %q, %v", got, err)
	}
	if ok, err := b.Exists(ctx, h); !ok || err != nil {
		t.Fatalf("Exists = %v, %v", ok, err)
	}
	bi, err := b.Stat(ctx, h)
	if err != nil || bi.Size != 5 {
		t.Fatalf("Stat = %+v, %v", bi, err)
	}
	empty := put(t, b, "")
	if got, err := b.Get(ctx, empty); err != nil || len(got) != 0 {
		t.Fatalf("Get(empty) = %q, %v", got, err)
	}
}

func testDedup(t *testing.T, b store.Backend) {
	h1 := put(t, b, "same")
	h2 := put(t, b, "same")
	if h1 != h2 {
		t.Fatal("one content, two hashes")
	}
	all, err := b.ListAllContent(ctx)
	if err != nil || !slices.Equal(all, []store.Hash{h1}) {
		t.Fatalf("ListAllContent = %v, %v", all, err)
	}
}

func testMissing(t *testing.T, b store.Backend) {
	_, h := blob(t, "never stored")
	_, err := b.Get(ctx, h)
	wantErr(t, "Get(missing)", err, store.ErrNotFound)
	_, err = b.Stat(ctx, h)
	wantErr(t, "Stat(missing)", err, store.ErrNotFound)
	if ok, err := b.Exists(ctx, h); ok || err != nil {
		t.Fatalf("Exists(missing) = %v, %v", ok, err)
	}
	_, err = b.GetByLabel(ctx, "nobody")
	wantErr(t, "GetByLabel(missing)", err, store.ErrNotFound)
	wantErr(t, "Label(missing blob)", b.Label(ctx, "l", h), store.ErrNotFound)
	wantErr(t, "ReplaceAtLabel(missing blob)", b.ReplaceAtLabel(ctx, "l", h), store.ErrNotFound)
	if names, err := b.ListLabels(ctx); len(names) != 0 || err != nil {
		t.Fatalf("a refused label was made: %v, %v", names, err)
	}
	if all, err := b.ListAllContent(ctx); len(all) != 0 || err != nil {
		t.Fatalf("ListAllContent of an empty store = %v, %v", all, err)
	}
}

func testLabelAppends(t *testing.T, b store.Backend) {
	a, c := put(t, b, "a"), put(t, b, "c")
	for _, h := range []store.Hash{a, c, a, c} {
		if err := b.Label(ctx, "x", h); err != nil {
			t.Fatal(err)
		}
	}
	wantRefs(t, b, "x", a, c) // appended once each, oldest first
}

func testRemoveFromLabel(t *testing.T, b store.Backend) {
	a, c := put(t, b, "a"), put(t, b, "c")
	b.Label(ctx, "x", a)
	b.Label(ctx, "x", c)
	if err := b.RemoveFromLabel(ctx, "x", a); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "x", c)
	wantErr(t, "RemoveFromLabel(absent ref)", b.RemoveFromLabel(ctx, "x", a), store.ErrNotFound)
	if err := b.RemoveFromLabel(ctx, "x", c); err != nil {
		t.Fatal(err)
	}
	_, err := b.GetByLabel(ctx, "x")
	wantErr(t, "an emptied label", err, store.ErrNotFound)
	if names, _ := b.ListLabels(ctx); len(names) != 0 {
		t.Fatalf("emptied label still listed: %v", names)
	}
	if ok, _ := b.Exists(ctx, a); !ok {
		t.Fatal("unlabelling removed the blob")
	}
}

func testRemoveLabel(t *testing.T, b store.Backend) {
	a := put(t, b, "a")
	b.Label(ctx, "x", a)
	if err := b.RemoveLabel(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	_, err := b.GetByLabel(ctx, "x")
	wantErr(t, "GetByLabel(removed)", err, store.ErrNotFound)
	wantErr(t, "RemoveLabel(missing)", b.RemoveLabel(ctx, "x"), store.ErrNotFound)
}

func testPutAtLabel(t *testing.T, b store.Backend) {
	h1, err := b.PutAtLabel(ctx, "team/log", []byte("one"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := b.PutAtLabel(ctx, "team/log", []byte("two"))
	if err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "team/log", h1, h2)
	if got, _ := b.Get(ctx, h2); string(got) != "two" {
		t.Fatalf("PutAtLabel stored %q", got)
	}
}

func testReplace(t *testing.T, b store.Backend) {
	a, c := put(t, b, "a"), put(t, b, "c")
	b.Label(ctx, "x", a)
	b.Label(ctx, "x", c)
	if err := b.ReplaceAtLabel(ctx, "x", a); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "x", a)
	h, err := b.ReplaceContentAtLabel(ctx, "x", []byte("new"))
	if err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "x", h)
	h2, err := b.ReplaceContentAtLabel(ctx, "fresh", []byte("new"))
	if err != nil || h2 != h {
		t.Fatalf("ReplaceContentAtLabel on a new label = %s, %v", h2, err)
	}
	wantRefs(t, b, "fresh", h)
}

func testSetLabel(t *testing.T, b store.Backend) {
	a, c := put(t, b, "a"), put(t, b, "c")
	if err := b.SetLabel(ctx, "x", []store.Hash{c, a}); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "x", c, a)
	if err := b.SetLabel(ctx, "x", []store.Hash{a}); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, b, "x", a)
	_, missing := blob(t, "never stored")
	wantErr(t, "SetLabel with a missing blob", b.SetLabel(ctx, "x", []store.Hash{c, missing}), store.ErrNotFound)
	wantErr(t, "SetLabel with no refs", b.SetLabel(ctx, "x", nil), store.ErrInvalidLabel)
	wantErr(t, "SetLabel of a bad name", b.SetLabel(ctx, "../x", []store.Hash{a}), store.ErrInvalidLabel)
	wantRefs(t, b, "x", a)
}

func testListLabels(t *testing.T, b store.Backend) {
	a := put(t, b, "a")
	names := []string{"zeta", "alpha", "6f1c5d2e-0b1a-4c3d-9e8f-7a6b5c4d3e2f:chain-head", "ns/inner/deep", "ns/b", "with space", "ünïcode"}
	for _, n := range names {
		if err := b.Label(ctx, n, a); err != nil {
			t.Fatalf("Label(%q): %v", n, err)
		}
	}
	got, err := b.ListLabels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ListLabels = %q, want %q", got, want)
	}
}

func testNamespaces(t *testing.T, b store.Backend) {
	a := put(t, b, "a")
	if err := b.Label(ctx, "leaf", a); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "a label under a label", b.Label(ctx, "leaf/under", a), store.ErrNotNamespace)
	if err := b.Label(ctx, "ns/x", a); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "a label where a namespace is", b.Label(ctx, "ns", a), store.ErrIsNamespace)
	_, err := b.GetByLabel(ctx, "ns")
	wantErr(t, "GetByLabel(namespace)", err, store.ErrIsNamespace)
}

func testTotalSize(t *testing.T, b store.Backend) {
	put(t, b, "12345")
	put(t, b, "1234567890")
	put(t, b, "12345") // dedup: counted once
	if n, err := b.CalculateTotalSize(ctx); n != 15 || err != nil {
		t.Fatalf("CalculateTotalSize = %d, %v; want 15", n, err)
	}
}

func testResolveReference(t *testing.T, b store.Backend) {
	a, c := put(t, b, "a"), put(t, b, "c")
	b.Label(ctx, "one", a)
	b.Label(ctx, "two", a)
	b.Label(ctx, "two", c)
	for ref, want := range map[string]string{"store:hash:" + c.String(): "c", "store:one": "a"} {
		got, err := b.ResolveReference(ctx, ref)
		if err != nil || string(got) != want {
			t.Fatalf("ResolveReference(%q) = %q, %v", ref, got, err)
		}
	}
	_, err := b.ResolveReference(ctx, "store:two")
	wantErr(t, "ResolveReference(two refs)", err, store.ErrAmbiguous)
	_, err = b.ResolveReference(ctx, "store:hash:xyz")
	wantErr(t, "ResolveReference(bad hash)", err, store.ErrInvalidHash)
	_, err = b.ResolveReference(ctx, "store:nobody")
	wantErr(t, "ResolveReference(missing label)", err, store.ErrNotFound)
}

func testInvalidNames(t *testing.T, b store.Backend) {
	a := put(t, b, "a")
	for _, name := range []string{"", "../x", "/abs", "a//b", "a/./b", "nul\x00", "trailing/", string(bytes.Repeat([]byte("n"), store.MaxLabelLen+1))} {
		wantErr(t, fmt.Sprintf("Label(%q)", name), b.Label(ctx, name, a), store.ErrInvalidLabel)
		_, err := b.PutAtLabel(ctx, name, []byte("x"))
		wantErr(t, fmt.Sprintf("PutAtLabel(%q)", name), err, store.ErrInvalidLabel)
		_, err = b.GetByLabel(ctx, name)
		wantErr(t, fmt.Sprintf("GetByLabel(%q)", name), err, store.ErrInvalidLabel)
	}
	if names, _ := b.ListLabels(ctx); len(names) != 0 {
		t.Fatalf("refused names made labels: %q", names)
	}
}

// testdata is store/testdata, wherever the suite runs from.
func testdata() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "testdata")
}

func testCollision(t *testing.T, b store.Backend) {
	for _, name := range []string{"shattered-1.pdf", "sha-mbles-1.bin"} {
		content, err := os.ReadFile(filepath.Join(testdata(), "sha1-collisions", name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = b.Store(ctx, content)
		wantErr(t, "Store("+name+")", err, store.ErrCollision)
		_, _, err = b.PutLabeled(ctx, bytes.NewReader(content), "l", store.LabelAppend)
		wantErr(t, "PutLabeled("+name+")", err, store.ErrCollision)
	}
	if all, _ := b.ListAllContent(ctx); len(all) != 0 {
		t.Fatalf("colliding content was stored: %v", all)
	}
	if names, _ := b.ListLabels(ctx); len(names) != 0 {
		t.Fatalf("colliding content was labelled: %v", names)
	}
}

func testStream(t *testing.T, b store.Backend) {
	content := make([]byte, 3<<20+17)
	for i := range content {
		content[i] = byte(i * 7 / 3)
	}
	want, _ := store.Sum(content)
	h, n, err := b.PutLabeled(ctx, bytes.NewReader(content), "big", store.LabelReplace)
	if err != nil || h != want || n != int64(len(content)) {
		t.Fatalf("PutLabeled = %s, %d, %v", h, n, err)
	}
	r, bi, err := b.OpenBlob(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if bi.Size != int64(len(content)) {
		t.Fatalf("OpenBlob size %d", bi.Size)
	}
	mid := make([]byte, 1000)
	if n, err := r.ReadAt(mid, 2<<20); n != len(mid) || err != nil || !bytes.Equal(mid, content[2<<20:2<<20+1000]) {
		t.Fatalf("ReadAt = %d, %v", n, err)
	}
	tail := make([]byte, 100)
	if n, err := r.ReadAt(tail, int64(len(content)-10)); n != 10 || err != io.EOF || !bytes.Equal(tail[:10], content[len(content)-10:]) {
		t.Fatalf("ReadAt at the end = %d, %v", n, err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("read through: %d bytes, %v", len(got), err)
	}
	rc, err := b.OpenReference(ctx, "store:big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if got, err := io.ReadAll(rc); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("OpenReference: %d bytes, %v", len(got), err)
	}
}

// testConcurrentAppends races appenders on one label: none is lost.
func testConcurrentAppends(t *testing.T, b store.Backend) {
	want := AppendRacing(t, "shared", 30, b)
	WantAll(t, b, "shared", want)
}

func testConcurrentStores(t *testing.T, b store.Backend) {
	content, want := blob(t, "stored by everyone at once")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			h, err := b.PutAtLabel(ctx, "same", content)
			if err == nil && h != want {
				err = fmt.Errorf("hash %s, want %s", h, want)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	wantRefs(t, b, "same", want)
	if got, err := b.Get(ctx, want); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("Get = %q, %v", got, err)
	}
}

func testClosed(t *testing.T, b store.Backend) {
	h := put(t, b, "a")
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := b.Get(ctx, h)
	wantErr(t, "Get after Close", err, store.ErrClosed)
	_, err = b.Store(ctx, []byte("b"))
	wantErr(t, "Store after Close", err, store.ErrClosed)
	_, err = b.GetByLabel(ctx, "x")
	wantErr(t, "GetByLabel after Close", err, store.ErrClosed)
}
