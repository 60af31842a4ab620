package store_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/theater-storefs/theater-storefs/store"
)

// The claim's attribute, as the store writes it (claim.go).
const claimAttr = "user.theater-storefs.sha1"

// leftoverSpool writes a spool file into dir's tmp/ as a crashed writer
// would leave it, claiming claim (nil: no claim).
func leftoverSpool(t *testing.T, dir string, content, claim []byte) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, store.TmpDir), 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, store.TmpDir, "spool-0123456789abcdef01234567")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if claim != nil {
		if err := unix.Setxattr(path, claimAttr, claim, 0); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// claimed reports whether the file at path carries a claim.
func claimed(path string) bool {
	_, err := unix.Getxattr(path, claimAttr, make([]byte, 20))
	return err == nil
}

// A crash can leave a claimed spool in tmp/: its commit may have been
// acknowledged, its link into data/ not durable. Open puts good content
// in data/ unless a whole copy is there, and removes the spool either way.
func TestClaimedLeftovers(t *testing.T) {
	content := []byte("acknowledged after one flush\n")
	h := sha(content)
	for _, tc := range []struct {
		name     string
		spool    []byte // the spool's content
		claim    []byte
		inData   []byte // data/<h> before Open; nil: none
		linked   bool   // data/<h> is the spool's second link
		wantData []byte // data/<h> after Open; nil: none
		kept     bool   // data/<h> keeps its inode
	}{
		{name: "link lost", spool: content, claim: h[:], wantData: content},
		{name: "linked", spool: content, claim: h[:], linked: true, wantData: content, kept: true},
		{name: "whole copy in data", spool: content, claim: h[:], inData: content, wantData: content, kept: true},
		{name: "corrupt copy in data", spool: content, claim: h[:], inData: bytes.ToUpper(content), wantData: content},
		{name: "cut short", spool: content[:10], claim: h[:]},
		{name: "torn", spool: bytes.ToUpper(content), claim: h[:]},
		{name: "no claim", spool: content},
		{name: "claim of another length", spool: content, claim: h[:10]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			spool := leftoverSpool(t, dir, tc.spool, tc.claim)
			blob := filepath.Join(dir, store.DataDir, h.String())
			if err := os.MkdirAll(filepath.Dir(blob), 0o755); err != nil {
				t.Fatal(err)
			}
			switch {
			case tc.linked:
				if err := os.Link(spool, blob); err != nil {
					t.Fatal(err)
				}
			case tc.inData != nil:
				if err := os.WriteFile(blob, tc.inData, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var ino uint64
			if tc.kept {
				ino = inode(t, blob)
			}
			s := openAt(t, dir, store.Options{})
			if left := tmpSpools(t, s, dir); len(left) != 0 {
				t.Fatalf("tmp/ = %v after Open", left)
			}
			got, err := os.ReadFile(blob)
			switch {
			case tc.wantData == nil && !os.IsNotExist(err):
				t.Fatalf("data/%s = %q, %v; want none", h, got, err)
			case tc.wantData != nil && !bytes.Equal(got, tc.wantData):
				t.Fatalf("data/%s = %q, %v; want %q", h, got, err, tc.wantData)
			}
			if tc.kept && inode(t, blob) != ino {
				t.Fatal("the blob in data/ was replaced")
			}
			if tc.wantData != nil && claimed(blob) {
				t.Fatal("the blob in data/ keeps its claim")
			}
			if tc.wantData != nil {
				if b, err := s.Get(bg, h); err != nil || !bytes.Equal(b, content) {
					t.Fatalf("Get = %q, %v", b, err)
				}
			}
		})
	}
}

// A claimed spool locked at Open (its process was still being torn down)
// is recovered, through the owner, once the lock goes.
func TestClaimedLeftoverRetried(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	content := []byte("its writer was killed a moment ago")
	h := sha(content)
	spool := leftoverSpool(t, dir, content, h[:])
	f, err := os.Open(spool)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, dir, store.Options{})
	if ok, err := s.Exists(bg, h); err != nil || ok {
		t.Fatalf("Exists while the spool is locked = %v, %v; want false", ok, err)
	}
	f.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ok, err := s.Exists(bg, h); err != nil || ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claimed spool was not recovered once unlocked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if b, err := s.Get(bg, h); err != nil || !bytes.Equal(b, content) {
		t.Fatalf("Get = %q, %v", b, err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for slices.Contains(tmpSpools(t, nil, dir), filepath.Base(spool)) {
		if time.Now().After(deadline) {
			t.Fatal("the recovered spool stayed in tmp/")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A claimed store is acknowledged once its spool is durable. Its name in
// tmp/ goes only after a flush that covers its link succeeds, and never
// once a flush has failed: the kernel reports a lost write once, so no
// later flush can vouch for a link. The spools stay for the next Open.
func TestClaimKeptAfterFailedFlush(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openAt(t, dir, store.Options{})
	var count int
	syncs := store.FailDataSyncs(s, 1, &count)
	var fail atomic.Bool
	var failed atomic.Int64
	store.FailSyncfs(s, &fail, &failed)
	fail.Store(true)
	// One spool alone is flushed with its own fsync; the flush of its
	// link (and of nothing else) is a syncfs, and fails.
	h := mustStore(t, s, "acknowledged, its link not durable")
	deadline := time.Now().Add(10 * time.Second)
	for failed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no flush of the link after the store")
		}
		time.Sleep(time.Millisecond)
	}
	fail.Store(false)
	h2 := mustStore(t, s, "the next flush succeeds")
	waitClaims(t, s)
	var kept []store.Hash
	for _, name := range tmpSpools(t, s, dir) {
		var claim store.Hash
		if n, err := unix.Getxattr(filepath.Join(dir, store.TmpDir, name), claimAttr, claim[:]); err == nil && n == len(claim) {
			kept = append(kept, claim)
		}
	}
	if len(kept) != 2 || !slices.Contains(kept, h) || !slices.Contains(kept, h2) {
		t.Fatalf("tmp/ keeps the claimed spools of %v, want those of %s and %s", kept, h, h2)
	}
	if syncs() != 0 {
		t.Errorf("%d syncs of data/ alone, want none: a link's flush is a syncfs", syncs())
	}
	s.Close()
	s = openAt(t, dir, store.Options{})
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v after the next Open", left)
	}
	for _, h := range []store.Hash{h, h2} {
		if ok, err := s.Exists(bg, h); err != nil || !ok {
			t.Fatalf("Exists(%s) = %v, %v", h, ok, err)
		}
		if claimed(blobPath(dir, h)) {
			t.Fatalf("data/%s keeps its claim", h)
		}
	}
}

// Two stores on one directory (two processes) storing the same content at
// once: a commit that finds the blob changed since it looked renames its
// spool over it, which then keeps no claim either.
func TestClaimsSameContentTwoStores(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	a := openAt(t, dir, store.Options{})
	b := openAt(t, dir, store.Options{})
	for i := range 100 {
		c := fmt.Appendf(nil, "same content %d", i)
		var wg sync.WaitGroup
		for _, s := range []*store.Store{a, b, a, b} {
			wg.Go(func() {
				if _, err := s.Store(bg, c); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	waitClaims(t, a)
	waitClaims(t, b)
	names := dataNames(t, dir)
	if len(names) != 100 {
		t.Fatalf("data/ holds %d blobs, want 100", len(names))
	}
	for _, n := range names {
		if claimed(filepath.Join(dir, store.DataDir, n)) {
			t.Fatalf("data/%s keeps a claim", n)
		}
	}
}

// Where claims are refused (no extended attributes), a store waits for its
// rename to be durable: nothing of it is left in tmp/ when it returns.
func TestClaimsRefused(t *testing.T) {
	s, dir := newStore(t)
	store.RefuseClaims(s)
	store.StopSpoolMaker(s)
	h := mustStore(t, s, "two flushes")
	if left := tmpSpools(t, nil, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v when the store returned", left)
	}
	if claimed(blobPath(dir, h)) {
		t.Fatal("the blob carries a claim")
	}
}
