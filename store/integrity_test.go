package store_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
)

// flipByte corrupts a file in place (same inode, same size) and moves its
// mtime so that any remembered verdict no longer applies.
func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
	f.Close()
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(path, later, later); err != nil {
		t.Fatal(err)
	}
}

type statKey struct {
	ino, size uint64
	mtime     int64
}

func keyOfPath(t *testing.T, path string) statKey {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	return statKey{fi.Sys().(*syscall.Stat_t).Ino, uint64(fi.Size()), fi.ModTime().UnixNano()}
}

// overwriteKeepingStat changes a file's bytes in place and restores its
// mtime, so inode, size and mtime are all as before (the ctime moves: no
// one can put it back).
func overwriteKeepingStat(t *testing.T, path string, content []byte) {
	t.Helper()
	before := keyOfPath(t, path)
	fi, _ := os.Lstat(path)
	if int64(len(content)) != fi.Size() {
		t.Fatal("overwriteKeepingStat needs content of the same size")
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	// The ctime moves with the write, unless the kernel's clock for it
	// (coarse before Linux 6.13) has not ticked since the last change:
	// then change it again until it has, as any later change would.
	ctime0 := fi.Sys().(*syscall.Stat_t).Ctim
	for deadline := time.Now().Add(time.Second); ; {
		if err := os.Chtimes(path, time.Now(), fi.ModTime()); err != nil {
			t.Fatal(err)
		}
		now, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		if now.Sys().(*syscall.Stat_t).Ctim != ctime0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	if after := keyOfPath(t, path); after != before {
		t.Fatalf("could not keep the stat key: %+v became %+v", before, after)
	}
}

func TestCorruptBlob(t *testing.T) {
	for _, writer := range []string{"theater", "store"} {
		t.Run("written by "+writer, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			content := []byte("this content will be corrupted on disk")
			var h store.Hash
			var s *store.Store
			if writer == "theater" {
				hs, err := theatertest.WriteBlob(dir, content)
				if err != nil {
					t.Fatal(err)
				}
				h, _ = store.ParseHash(hs)
				s = openAt(t, dir, store.Options{})
			} else {
				s = openAt(t, dir, store.Options{})
				h = mustStore(t, s, string(content))
				if _, err := s.Get(bg, h); err != nil {
					t.Fatal(err) // verdict now known: ok
				}
			}
			if err := theatertest.WriteLabel(dir, "points-to-corrupt", []string{h.String()}); err != nil {
				t.Fatal(err)
			}
			flipByte(t, blobPath(dir, h), 5)

			_, _, err := s.Open(bg, h)
			wantErr(t, "Open", err, store.ErrCorrupt)
			_, err = s.Get(bg, h)
			wantErr(t, "Get", err, store.ErrCorrupt)
			_, err = s.ResolveReference(bg, "store:points-to-corrupt")
			wantErr(t, "ResolveReference", err, store.ErrCorrupt)

			rep, err := s.Verify(bg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 1 || !hasProblem(rep, "corrupt-blob", h.String()) {
				t.Fatalf("Verify problems = %v, want exactly corrupt-blob %s", rep.Problems, h)
			}
			if rep.Blobs != 1 || rep.Labels != 1 {
				t.Fatalf("Verify counted %d blobs, %d labels", rep.Blobs, rep.Labels)
			}
		})
	}
}

func TestVerifyMissingBlob(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	present, err := theatertest.WriteBlob(dir, []byte("present"))
	if err != nil {
		t.Fatal(err)
	}
	missing := shaStr("missing")
	if err := theatertest.WriteLabel(dir, "dangling", []string{present, missing.String()}); err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(dir, "ok/fine", []string{present}); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, dir, store.Options{})
	var calls, lastDone, lastTotal int
	rep, err := s.Verify(bg, func(done, total int) { calls++; lastDone, lastTotal = done, total })
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 1 || !hasProblem(rep, "missing-blob", "dangling") ||
		!strings.Contains(rep.Problems[0].Detail, missing.String()) {
		t.Fatalf("Verify problems = %v, want one missing-blob for label dangling naming %s", rep.Problems, missing)
	}
	if calls == 0 || lastDone != lastTotal || lastTotal != 3 {
		t.Fatalf("progress: %d calls, last %d/%d; want ending at 3/3", calls, lastDone, lastTotal)
	}
	_, err = s.ResolveReference(bg, "store:hash:"+missing.String())
	wantErr(t, "ResolveReference(missing)", err, store.ErrNotFound)
}

func TestVerifyClean(t *testing.T) {
	s, _ := newStore(t)
	for i := range 20 {
		if _, err := s.PutAtLabel(bg, "l/"+itoa(i%3), []byte("blob "+itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	rep, err := s.Verify(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Problems) != 0 || rep.Blobs != 20 || rep.Labels != 3 {
		t.Fatalf("Verify = %+v", rep)
	}
}

// readVerdicts returns tmp/verified as records "hash -> last ok field".
func readVerdicts(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	f, err := os.Open(filepath.Join(dir, store.TmpDir, "verified"))
	if err != nil {
		return out
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 6 {
			out[fields[0]] = fields[5]
		}
	}
	return out
}

// The verdict on a blob is remembered across Opens, keyed on inode, size,
// mtime and ctime: a reopened store does not hash a blob it verified (the
// count of verdict misses stays put), and a change to any part of the key
// makes it hash again. A rewrite in place that keeps the size and puts the
// mtime back is caught by the ctime, which cannot be put back.
func TestVerdictCacheAcrossOpens(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	content := []byte("verified once in its life")
	hs, err := theatertest.WriteBlob(dir, content)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := store.ParseHash(hs)
	path := blobPath(dir, h)
	tampered := bytes.ToUpper(content)

	s1 := openAt(t, dir, store.Options{})
	rep, err := s1.Verify(bg, nil)
	if err != nil || len(rep.Problems) != 0 {
		t.Fatalf("Verify: %v, %v", rep, err)
	}
	s1.Close()
	if v := readVerdicts(t, dir); v[hs] != "1" {
		t.Fatalf("tmp/verified = %v, want an ok verdict for %s", v, hs)
	}

	// Reopened: served on the remembered verdict, not hashed.
	s2 := openAt(t, dir, store.Options{})
	getHashing(t, s2, h, content, 0)

	// Same inode, size and mtime, new bytes: the ctime moved, so it is
	// hashed and refused.
	overwriteKeepingStat(t, path, tampered)
	_, err = s2.Get(bg, h)
	wantErr(t, "Get after a same-size rewrite with the mtime put back", err, store.ErrCorrupt)

	// Size changes (a byte appended, mtime put back): hashed, refused.
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, path, time.Minute)
	getHashing(t, s2, h, content, 1) // repaired: hashed once, ok
	fi, _ := os.Stat(path)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("!"))
	f.Close()
	os.Chtimes(path, fi.ModTime(), fi.ModTime())
	_, err = s2.Get(bg, h)
	wantErr(t, "Get after size change", err, store.ErrCorrupt)

	// Repaired again: hashed once, then served from the verdict; only the
	// mtime changed: hashed again.
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, path, 2*time.Minute)
	getHashing(t, s2, h, content, 1)
	getHashing(t, s2, h, content, 0)
	touch(t, path, 3*time.Minute)
	getHashing(t, s2, h, content, 1)

	// A corrupt verdict is remembered too, across Opens: the blob is
	// hashed once, and refused without hashing after that.
	tamper := func() {
		t.Helper()
		if err := os.WriteFile(path, tampered, 0o644); err != nil {
			t.Fatal(err)
		}
		touch(t, path, 4*time.Minute)
	}
	tamper()
	before := store.VerdictMisses(s2)
	_, err = s2.Get(bg, h)
	wantErr(t, "Get of a tampered blob", err, store.ErrCorrupt)
	_, err = s2.Get(bg, h)
	wantErr(t, "Get of a tampered blob, again", err, store.ErrCorrupt)
	if n := store.VerdictMisses(s2) - before; n != 1 {
		t.Errorf("two Gets of a corrupt blob hashed it %d times, want once", n)
	}
	s2.Close()
	if v := readVerdicts(t, dir); v[hs] != "0" {
		t.Fatalf("tmp/verified = %v, want the latest verdict for %s to be corrupt", v, hs)
	}
	s3 := openAt(t, dir, store.Options{})
	_, err = s3.Get(bg, h)
	wantErr(t, "Get with a remembered corrupt verdict", err, store.ErrCorrupt)
	if n := store.VerdictMisses(s3); n != 0 {
		t.Errorf("a reopened store hashed a blob with a remembered verdict %d times", n)
	}

	// A new inode with the same size and mtime (a file replaced by rename)
	// is hashed.
	tmp := filepath.Join(dir, "replacement")
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		t.Fatal(err)
	}
	fi, _ = os.Stat(path)
	os.Chtimes(tmp, fi.ModTime(), fi.ModTime())
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	getHashing(t, s3, h, content, 1)
}

// getHashing gets h from s, wants content, and wants the Get to have
// hashed the blob `hashes` times (0: served on a remembered verdict).
func getHashing(t *testing.T, s *store.Store, h store.Hash, content []byte, hashes int64) {
	t.Helper()
	before := store.VerdictMisses(s)
	got, err := s.Get(bg, h)
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("Get = %q, %v; want %q", got, err, content)
	}
	if n := store.VerdictMisses(s) - before; n != hashes {
		t.Fatalf("Get hashed the blob %d times, want %d", n, hashes)
	}
}

// touch sets a file's mtime to now+d.
func touch(t *testing.T, path string, d time.Duration) {
	t.Helper()
	when := time.Now().Add(d)
	if err := os.Chtimes(path, when, when); err != nil {
		t.Fatal(err)
	}
}

// Blobs this store writes are verified by construction: their verdict is
// recorded at commit, and a later Open (even in a new Store) does not hash.
func TestVerdictRecordedAtCommit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s1 := openAt(t, dir, store.Options{})
	content := []byte("written by us")
	h := mustStore(t, s1, string(content))
	s1.Close()
	if v := readVerdicts(t, dir); v[h.String()] != "1" {
		t.Fatalf("tmp/verified = %v, want the committed blob recorded ok", v)
	}
	s2 := openAt(t, dir, store.Options{})
	getHashing(t, s2, h, content, 0)
}

// Verify rehashes in full whatever the remembered verdict says.
func TestVerifyIgnoresVerdictCache(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s1 := openAt(t, dir, store.Options{})
	h := mustStore(t, s1, "fsck hashes everything")
	s1.Close()
	overwriteKeepingStat(t, blobPath(dir, h), []byte("FSCK HASHES EVERYTHING"))
	s2 := openAt(t, dir, store.Options{})
	rep, err := s2.Verify(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "corrupt-blob", h.String()) {
		t.Fatalf("Verify trusted the cached verdict: %v", rep.Problems)
	}
	// And its verdict now applies to reads.
	_, err = s2.Get(bg, h)
	wantErr(t, "Get after Verify", err, store.ErrCorrupt)
}

// wantRefusedOverCorrupt puts bogus where content's blob belongs and
// checks that storing content, bare or labelled, is refused as corrupt,
// saying what to do, with no label written, the blob untouched and tmp/
// left empty.
func wantRefusedOverCorrupt(t *testing.T, s *store.Store, dir string, content, bogus []byte) store.Hash {
	t.Helper()
	h := sha(content)
	if err := os.WriteFile(blobPath(dir, h), bogus, 0o644); err != nil {
		t.Fatal(err)
	}
	ino := inode(t, blobPath(dir, h))
	_, err := s.Store(bg, content)
	wantErr(t, "Store over a corrupt blob", err, store.ErrCorrupt)
	if !strings.Contains(err.Error(), "remove") {
		t.Errorf("error %q does not say what to do", err)
	}
	_, err = s.PutAtLabel(bg, "keep", content)
	wantErr(t, "PutAtLabel over a corrupt blob", err, store.ErrCorrupt)
	if labelFileExists(dir, "keep") {
		t.Fatal("label written for content that was not stored")
	}
	if b, _ := os.ReadFile(blobPath(dir, h)); !bytes.Equal(b, bogus) || inode(t, blobPath(dir, h)) != ino {
		t.Fatal("the existing blob was touched")
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v", left)
	}
	return h
}

// A blob of the right size whose bytes were changed is not taken for the
// content stored again; once it is removed, storing works. A blob Theater
// wrote whole is deduplicated without being rewritten.
func TestStoreSameSizeCorrupt(t *testing.T) {
	s, dir := newStore(t)
	content := []byte("precious data\n")
	mustStore(t, s, string(content))
	h := wantRefusedOverCorrupt(t, s, dir, content, []byte("PRECIOUS DATA\n"))

	if err := os.Remove(blobPath(dir, h)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutAtLabel(bg, "keep", content); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "keep", h)

	// A whole blob written beside the store (as Theater does): verified,
	// then deduplicated in place.
	other := []byte("written by Theater")
	ho := sha(other)
	if err := os.WriteFile(blobPath(dir, ho), other, 0o644); err != nil {
		t.Fatal(err)
	}
	ino := inode(t, blobPath(dir, ho))
	for range 2 {
		if _, err := s.PutAtLabel(bg, "theirs", other); err != nil {
			t.Fatal(err)
		}
	}
	if got := inode(t, blobPath(dir, ho)); got != ino {
		t.Fatalf("a whole blob was rewritten: inode %d, was %d", got, ino)
	}
}

func TestStoreSizeMismatch(t *testing.T) {
	s, dir := newStore(t)
	wantRefusedOverCorrupt(t, s, dir, []byte("the real content"), []byte("a different, longer content under the same name"))
}

func TestSymlinksRefused(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	s := openAt(t, dir, store.Options{})
	h := mustStore(t, s, "inside")

	// An outside file whose content hashes to the symlink's name.
	secret := []byte("outside secret")
	outFile := filepath.Join(parent, "secret")
	if err := os.WriteFile(outFile, secret, 0o644); err != nil {
		t.Fatal(err)
	}
	hs := sha(secret)
	if err := os.Symlink(outFile, blobPath(dir, hs)); err != nil {
		t.Fatal(err)
	}
	outLabel := filepath.Join(parent, "outlabel")
	if err := os.WriteFile(outLabel, []byte(h.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	labels := filepath.Join(dir, store.LabelsDir)
	if err := os.Symlink(outLabel, filepath.Join(labels, "evil")); err != nil {
		t.Fatal(err)
	}
	outDir := filepath.Join(parent, "outdir")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outDir, "l"), []byte(h.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outDir, filepath.Join(labels, "evildir")); err != nil {
		t.Fatal(err)
	}
	// A symlink inside the store, from labels/ to data/.
	if err := os.Symlink("../data", filepath.Join(labels, "todata")); err != nil {
		t.Fatal(err)
	}
	// Symlinks that stay inside the store are refused as well: data/<h> to
	// a file there that does hash to h, and a label to another label.
	aliased := []byte("content behind an in-store symlink")
	ha := sha(aliased)
	if err := os.WriteFile(filepath.Join(dir, store.DataDir, "stash"), aliased, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("stash", blobPath(dir, ha)); err != nil {
		t.Fatal(err)
	}
	mustLabel(t, s, "real", h)
	if err := os.Symlink("real", filepath.Join(labels, "alias")); err != nil {
		t.Fatal(err)
	}
	outside := func() map[string]string { return snapshotOutside(t, parent, "store") }
	before := outside()

	_, _, err := s.Open(bg, ha)
	wantErr(t, "Open(blob symlinked inside data/)", err, store.ErrCorrupt)
	_, err = s.GetByLabel(bg, "alias")
	wantErr(t, "GetByLabel(label symlinked to a label)", err, store.ErrCorrupt)
	if err := s.RemoveLabel(bg, "real"); err != nil {
		t.Fatal(err)
	}

	// data/ symlink out of the store.
	_, _, err = s.Open(bg, hs)
	wantErr(t, "Open(symlinked blob)", err, store.ErrCorrupt)
	if _, err := s.Get(bg, hs); err == nil {
		t.Fatal("Get served a symlinked blob")
	}
	if _, err := s.ResolveReference(bg, "store:hash:"+hs.String()); err == nil {
		t.Fatal("ResolveReference served a symlinked blob")
	}
	if ok, _ := s.Exists(bg, hs); ok {
		t.Fatal("Exists(symlinked blob) = true")
	}
	if _, err := s.Stat(bg, hs); err == nil {
		t.Fatal("Stat(symlinked blob) succeeded")
	}
	all, _ := s.ListAllContent(bg)
	if slices.Contains(all, hs) {
		t.Fatal("ListAllContent lists a symlink")
	}
	_, err = s.Store(bg, secret)
	wantErr(t, "Store over a symlinked blob", err, store.ErrCorrupt)
	wantErr(t, "Label(symlinked blob)", s.Label(bg, "x", hs), store.ErrNotFound)

	// labels/ symlinks.
	_, err = s.GetByLabel(bg, "evil")
	wantErr(t, "GetByLabel(symlink)", err, store.ErrCorrupt)
	wantErr(t, "Label(symlink)", s.Label(bg, "evil", h), store.ErrCorrupt)
	if refs, err := s.GetByLabel(bg, "evildir/l"); err == nil {
		t.Fatalf("GetByLabel through a symlinked directory = %v", refs)
	}
	// Writes through a symlinked directory are refused (the exact error
	// depends on which check meets the link first); the snapshot of the
	// outside below shows nothing was written there.
	if err := s.Label(bg, "evildir/new", h); err == nil {
		t.Fatal("Label through a symlinked directory succeeded")
	}
	if _, err := s.PutAtLabel(bg, "evildir/new", []byte("p")); err == nil {
		t.Fatal("PutAtLabel through a symlinked directory succeeded")
	}
	if _, err := s.ReplaceContentAtLabel(bg, "evildir/new", []byte("p")); err == nil {
		t.Fatal("ReplaceContentAtLabel through a symlinked directory succeeded")
	}
	wantErr(t, "ReplaceAtLabel(through symlinked dir)", s.ReplaceAtLabel(bg, "evildir/new", h), store.ErrNotNamespace)
	wantErr(t, "MakeNamespace(through symlinked dir)", s.MakeNamespace(bg, "evildir/ns"), store.ErrNotNamespace)
	mustLabel(t, s, "x", h)
	wantErr(t, "RenameLabel(into symlinked dir)", s.RenameLabel(bg, "x", "evildir/x"), store.ErrNotNamespace)
	if err := s.RemoveLabel(bg, "x"); err != nil {
		t.Fatal(err)
	}
	s.RemoveLabel(bg, "evildir/l")
	s.RemoveFromLabel(bg, "evildir/l", h)
	wantErr(t, "RemoveNamespace(symlinked dir)", s.RemoveNamespace(bg, "evildir"), store.ErrNotNamespace)
	if _, err := s.ReadNamespace(bg, "evildir"); err == nil {
		t.Fatal("ReadNamespace followed a symlink")
	}
	if err := s.Label(bg, "todata/"+h.String(), h); err == nil {
		t.Fatal("Label through labels/todata -> ../data succeeded")
	}
	wantErr(t, "ReplaceAtLabel(through in-store symlink)", s.ReplaceAtLabel(bg, "todata/"+h.String(), h), store.ErrNotNamespace)
	s.RemoveLabel(bg, "todata/"+h.String())
	if b, err := s.Get(bg, h); err != nil || string(b) != "inside" {
		t.Fatalf("after writes through labels/todata, blob %s reads %q, %v", h, b, err)
	}
	labelsList, err := s.ListLabels(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(labelsList) != 0 {
		t.Fatalf("ListLabels = %q, want symlinks skipped", labelsList)
	}
	// ReplaceAtLabel on a symlinked label replaces the link itself.
	if err := s.ReplaceAtLabel(bg, "evil", h); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(labels, "evil")); err != nil || !fi.Mode().IsRegular() {
		t.Fatalf("labels/evil after ReplaceAtLabel: %v, %v", fi, err)
	}
	if d := diffSnapshots(before, outside()); len(d) != 0 {
		t.Fatalf("symlinks were followed out of the store: %v", d)
	}
}

func TestSymlinkedStoreDirsRefused(t *testing.T) {
	for _, sub := range []string{store.DataDir, store.LabelsDir} {
		t.Run(sub, func(t *testing.T) {
			parent := t.TempDir()
			dir := filepath.Join(parent, "store")
			if err := os.MkdirAll(filepath.Join(parent, "elsewhere"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(parent, "elsewhere"), filepath.Join(dir, sub)); err != nil {
				t.Fatal(err)
			}
			s, err := store.Open(dir, store.Options{Logger: quiet})
			if err == nil {
				s.Close()
				t.Fatalf("Open accepted %s/ as a symlink", sub)
			}
		})
	}
}

func TestVerdictLogSymlinkNotFollowed(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	if _, err := theatertest.WriteBlob(dir, []byte("x")); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, store.TmpDir), 0o755)
	victim := filepath.Join(parent, "victim")
	os.WriteFile(victim, []byte("keep me"), 0o644)
	if err := os.Symlink(victim, filepath.Join(dir, store.TmpDir, "verified")); err != nil {
		t.Fatal(err)
	}
	s := openAt(t, dir, store.Options{})
	if _, err := s.Get(bg, shaStr("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Verify(bg, nil); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(victim); string(b) != "keep me" {
		t.Fatalf("the verdict log followed a symlink out of the store: victim = %q", b)
	}
}

func collisionFiles(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range []string{"shattered-1.pdf", "shattered-2.pdf", "sha-mbles-1.bin", "sha-mbles-2.bin"} {
		b, err := os.ReadFile(filepath.Join("testdata", "sha1-collisions", name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = b
	}
	// The vectors are what they claim: pairs with equal plain SHA-1.
	if sha(out["shattered-1.pdf"]) != sha(out["shattered-2.pdf"]) || sha(out["sha-mbles-1.bin"]) != sha(out["sha-mbles-2.bin"]) ||
		bytes.Equal(out["shattered-1.pdf"], out["shattered-2.pdf"]) || bytes.Equal(out["sha-mbles-1.bin"], out["sha-mbles-2.bin"]) {
		t.Fatal("test vectors are not SHA-1 collision pairs")
	}
	return out
}

func TestCollisionRefused(t *testing.T) {
	files := collisionFiles(t)
	s, dir := newStore(t)
	for name, content := range files {
		t.Run(name, func(t *testing.T) {
			if _, err := store.Sum(content); !errors.Is(err, store.ErrCollision) {
				t.Fatalf("Sum: %v", err)
			}
			if _, _, err := store.HashReader(bytes.NewReader(content)); !errors.Is(err, store.ErrCollision) {
				t.Fatalf("HashReader: %v", err)
			}
			_, err := s.Store(bg, content)
			wantErr(t, "Store", err, store.ErrCollision)
			_, err = s.PutAtLabel(bg, "collide", content)
			wantErr(t, "PutAtLabel", err, store.ErrCollision)
			_, err = s.ReplaceContentAtLabel(bg, "collide", content)
			wantErr(t, "ReplaceContentAtLabel", err, store.ErrCollision)

			// Written out of order through a spool.
			sp, err := s.NewSpool()
			if err != nil {
				t.Fatal(err)
			}
			half := int64(len(content) / 2)
			sp.WriteAt(content[half:], half)
			sp.WriteAt(content[:half], 0)
			_, err = sp.Commit(bg, "collide", store.LabelAppend)
			wantErr(t, "Spool.Commit", err, store.ErrCollision)
			if !strings.Contains(err.Error(), "collision") {
				t.Fatalf("error does not say what is wrong: %v", err)
			}
		})
	}
	if names := dataNames(t, dir); len(names) != 0 {
		t.Fatalf("data/ = %v after refused collisions", names)
	}
	if labelFileExists(dir, "collide") {
		t.Fatal("a label was created for refused content")
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v", left)
	}
}

// A collision blob that Theater wrote (under its plain SHA-1 name) is
// refused on read and reported by fsck.
func TestCollisionBlobOnDisk(t *testing.T) {
	files := collisionFiles(t)
	dir := filepath.Join(t.TempDir(), "store")
	hs, err := theatertest.WriteBlob(dir, files["shattered-1.pdf"])
	if err != nil {
		t.Fatal(err)
	}
	h, _ := store.ParseHash(hs)
	s := openAt(t, dir, store.Options{})
	_, err = s.Get(bg, h)
	wantErr(t, "Get", err, store.ErrCorrupt)
	rep, err := s.Verify(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "corrupt-blob", hs) {
		t.Fatalf("Verify = %v", rep.Problems)
	}
}

func TestNoFalseCollisions(t *testing.T) {
	s, dir := newStore(t)
	r := rand.New(rand.NewSource(42))
	blobs := make([][]byte, 1000)
	for i := range blobs {
		b := make([]byte, r.Intn(8192))
		r.Read(b)
		blobs[i] = b
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(blobs))
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < len(blobs); i += 8 {
				h, err := s.Store(bg, blobs[i])
				if err == nil && h != sha(blobs[i]) {
					err = errors.New("wrong hash for blob " + itoa(i))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	uniq := map[store.Hash]bool{}
	for _, b := range blobs {
		uniq[sha(b)] = true
	}
	if n := len(dataNames(t, dir)); n != len(uniq) {
		t.Fatalf("data/ holds %d blobs, want %d", n, len(uniq))
	}
}

func TestLeftoversRemovedOnOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openAt(t, dir, store.Options{})
	h := mustStore(t, s, "kept")
	s.Close()

	tmp := filepath.Join(dir, store.TmpDir)
	for _, n := range []string{"spool-0123456789abcdef01234567", "spool-x", "label-0123456789abcdef01234567"} {
		if err := os.WriteFile(filepath.Join(tmp, n), []byte("crash leftover"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, "not-ours"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	verifiedBefore, _ := os.ReadFile(filepath.Join(tmp, "verified"))

	s2 := openAt(t, dir, store.Options{})
	if got := dirNames(t, tmp); !slices.Equal(got, []string{"not-ours", "verified"}) {
		t.Fatalf("tmp/ after Open = %v, want leftovers removed", got)
	}
	if b, _ := os.ReadFile(filepath.Join(tmp, "verified")); !bytes.Equal(b, verifiedBefore) {
		t.Fatal("Open changed the verdict log")
	}
	if b, err := s2.Get(bg, h); err != nil || string(b) != "kept" {
		t.Fatalf("Get = %q, %v", b, err)
	}
}

// lockedTemp creates tmp/name in the store at dir and holds an flock on
// it, as a live writer does, until the test ends (or it is closed).
func lockedTemp(t *testing.T, dir, name string) *os.File {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, store.TmpDir, name), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	return f
}

// openWithLockedLeftover opens a store whose tmp/ holds name, locked by a
// writer of another process (the file returned) at the moment of Open.
func openWithLockedLeftover(t *testing.T, name string) (string, *store.Store, *os.File) {
	dir := filepath.Join(t.TempDir(), "store")
	openAt(t, dir, store.Options{}).Close()
	f := lockedTemp(t, dir, name)
	return dir, openAt(t, dir, store.Options{}), f
}

// A leftover still locked at Open is removed once its lock goes, not left
// until the next Open: a server killed a moment ago may still be holding
// its spools when the new server opens the store (the kernel releases a
// dying process's files highest descriptor first, and a low one after
// /dev/fuse, whose release lets the new mount start).
func TestLeftoverLockedAtOpenRemovedOnceUnlocked(t *testing.T) {
	dir, s, dying := openWithLockedLeftover(t, "spool-0123456789abcdef01234567")
	time.Sleep(100 * time.Millisecond)
	if got := tmpSpools(t, s, dir); len(got) != 1 {
		t.Fatalf("tmp/ while the spool is locked = %v, want it kept", got)
	}
	dying.Close() // the dead writer's files are released at last
	deadline := time.Now().Add(5 * time.Second)
	for len(tmpSpools(t, s, dir)) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("tmp/ 5 s after the lock went = %v, want the leftover removed", tmpSpools(t, s, dir))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if _, _, err := s.Put(bg, strings.NewReader("still works")); err != nil {
		t.Fatal(err)
	}
}

// A store closes at once while a leftover it found locked at Open is still
// locked (a live writer of another process), and leaves it.
func TestCloseWithLeftoverStillLocked(t *testing.T) {
	dir, s, live := openWithLockedLeftover(t, "label-0123456789abcdef01234567")
	time.Sleep(50 * time.Millisecond)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close hangs while a leftover is locked")
	}
	live.Close()
	time.Sleep(50 * time.Millisecond)
	if got := tmpSpools(t, s, dir); len(got) != 1 {
		t.Fatalf("tmp/ after Close = %v, want the file left to its writer", got)
	}
}

func TestLiveSpoolSurvivesOtherOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	a := openAt(t, dir, store.Options{})
	sp, err := a.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Discard()
	sp.Write([]byte("being written by a live writer"))
	live := tmpSpools(t, a, dir)
	if len(live) != 1 {
		t.Fatalf("tmp/ = %v", live)
	}
	// A dead one next to it, to show Open did clear leftovers.
	dead := filepath.Join(dir, store.TmpDir, "spool-dead")
	os.WriteFile(dead, []byte("dead"), 0o644)

	b := openAt(t, dir, store.Options{})
	if got := tmpSpools(t, b, dir); !slices.Equal(got, live) {
		t.Fatalf("tmp/ after a second Open = %v, want the live spool %v kept and the dead one gone", got, live)
	}
	sp.Write([]byte(", and finished"))
	h, err := sp.Commit(bg, "live", store.LabelAppend)
	if err != nil {
		t.Fatalf("Commit of the live spool: %v", err)
	}
	got, err := b.ResolveReference(bg, "store:live")
	if err != nil || string(got) != "being written by a live writer, and finished" {
		t.Fatalf("other store reads %q, %v", got, err)
	}
	if h != shaStr("being written by a live writer, and finished") {
		t.Fatal("wrong hash")
	}
}

// Each Open returns its own file, reading from the start even after another
// reader consumed theirs.
func TestOpenIndependentFiles(t *testing.T) {
	s, _ := newStore(t)
	h := mustStore(t, s, "shared reading")
	f1, _, err := s.Open(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer f1.Close()
	io.ReadAll(f1)
	f2, _, err := s.Open(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer f2.Close()
	if b, _ := io.ReadAll(f2); string(b) != "shared reading" {
		t.Fatalf("second Open reads %q", b)
	}
}

// A verdict log with junk (a torn last line after a crash, foreign lines)
// is read for what is valid in it; the rest is ignored.
func TestVerdictLogTolerant(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s1 := openAt(t, dir, store.Options{})
	h := mustStore(t, s1, "remembered")
	s1.Close()
	logPath := filepath.Join(dir, store.TmpDir, "verified")
	f, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("garbage line\n\n" + strings.Repeat("z", 40) + " 1 2 3 4 1\n" + h.String() + " x 1 2 3 0\n" +
		h.String() + " 1 2 3 0\n" + h.String() + " 12")
	f.Close()
	s2 := openAt(t, dir, store.Options{})
	// The valid record still applies (the blob is served without being
	// hashed); the junk, and a record in the old 5-field form, did not
	// override it.
	getHashing(t, s2, h, []byte("remembered"), 0)
}

// TestDataSyncFailure: when the fsync of data/ fails, the commit fails and
// its label is not written. The next commit of the same content finds the
// blob in place, but its rename may not be durable: data/ is synced again
// before the label points at it. Once that succeeded, a commit that
// renames nothing syncs nothing.
func TestDataSyncFailure(t *testing.T) {
	failFirstDataSync(t, func(t *testing.T, dir string, s *store.Store, syncs *int) {
		content := "content whose rename is not durable"
		_, _, err := s.PutLabeled(bg, strings.NewReader(content), "first", store.LabelReplace)
		wantErr(t, "PutLabeled with data/ failing to sync", err, syscall.EIO)
		if labelFileExists(dir, "first") {
			t.Errorf("a label was written for a blob whose rename failed to sync")
		}
		if *syncs != 1 {
			t.Fatalf("%d *syncs of data/ for the first commit, want 1", *syncs)
		}

		h, _, err := s.PutLabeled(bg, strings.NewReader(content), "second", store.LabelReplace)
		if err != nil {
			t.Fatal(err)
		}
		wantRefs(t, s, "second", h)
		if *syncs != 2 {
			t.Errorf("%d *syncs of data/ after a commit that found the unsynced blob in place, want 2", *syncs)
		}
		if _, _, err := s.PutLabeled(bg, strings.NewReader(content), "third", store.LabelReplace); err != nil {
			t.Fatal(err)
		}
		if *syncs != 2 {
			t.Errorf("%d *syncs of data/ after a commit that renamed nothing into a synced data/, want 2", *syncs)
		}
	})
}

// TestDataSyncFailureUnlabelled: without claims (a file system without
// extended attributes), a commit without a label is acknowledged by the
// syncer once its rename is durable. When that sync fails, the commit
// fails; a label pointed at the blob afterwards syncs data/ first, as does
// the next commit of the same content.
func TestDataSyncFailureUnlabelled(t *testing.T) {
	failFirstDataSync(t, func(t *testing.T, dir string, s *store.Store, syncs *int) {
		store.RefuseClaims(s)
		content := "stored, its rename not durable"
		_, err := s.Store(bg, []byte(content))
		wantErr(t, "Store with data/ failing to sync", err, syscall.EIO)
		if *syncs != 1 {
			t.Fatalf("%d *syncs of data/ for the first commit, want 1", *syncs)
		}
		h, err := store.Sum([]byte(content))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Label(bg, "after", h); err != nil {
			t.Fatal(err)
		}
		if *syncs != 2 {
			t.Errorf("%d *syncs of data/ after labelling a blob whose rename was not durable, want 2", *syncs)
		}
		wantRefs(t, s, "after", h)
		if _, err := s.Store(bg, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if err := s.Label(bg, "again", h); err != nil {
			t.Fatal(err)
		}
		if *syncs != 2 {
			t.Errorf("%d *syncs of data/ once data/ was durable, want 2", *syncs)
		}
	})
}

// TestVerdictsBounded: memory holds at most the limit of verdicts however
// many blobs are stored, the log is compacted when it outgrows them, and
// a blob whose verdict was dropped is hashed again, once.
func TestVerdictsBounded(t *testing.T) {
	const limit = 16
	store.LimitVerdicts(t, limit)
	dir := filepath.Join(t.TempDir(), "store")
	s := openAt(t, dir, store.Options{})
	var hashes []store.Hash
	var contents [][]byte
	for i := range 10 * limit {
		c := []byte("blob " + strconv.Itoa(i))
		h, err := s.Store(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		hashes, contents = append(hashes, h), append(contents, c)
		if n := store.Verdicts(s); n > limit {
			t.Fatalf("%d verdicts held after %d stores, want at most %d", n, i+1, limit)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "tmp", "verified"))
	if err != nil {
		t.Fatal(err)
	}
	// Compacted at 4 times the limit, to what is held.
	if lines := bytes.Count(log, []byte("\n")); lines > 4*limit {
		t.Errorf("the log has %d records for %d verdicts held", lines, store.Verdicts(s))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openAt(t, dir, store.Options{})
	hashed := 0
	for i, h := range hashes {
		before := store.VerdictMisses(s2)
		got, err := s2.Get(bg, h)
		if err != nil || !bytes.Equal(got, contents[i]) {
			t.Fatalf("Get %s = %q, %v", h, got, err)
		}
		hashed += int(store.VerdictMisses(s2) - before)
		getHashing(t, s2, h, contents[i], 0) // its verdict is held now
	}
	// At most limit verdicts were held after reopening.
	if hashed < len(hashes)-limit {
		t.Errorf("%d of %d blobs hashed again after reopening, want at least %d", hashed, len(hashes), len(hashes)-limit)
	}
}

// TestForeignBlobSynced: a blob another process put into data/ (Theater,
// which never fsyncs) may not be durable, so the first label pointed at
// it syncs data/; once a sync began after the blob changed, later labels
// do not.
func TestForeignBlobSynced(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openAt(t, dir, store.Options{Logger: quiet})
	var syncs int
	store.FailDataSyncs(s, 0, &syncs)
	// A claimed commit finding the blob is answered at once: its spool
	// stays in tmp/ until a syncfs has covered the blob found. Without
	// claims it waits for a sync of data/, counted here.
	store.RefuseClaims(s)
	content := []byte("written by Theater")
	h, err := store.Sum(content)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data", h.String()), content, 0o644); err != nil {
		t.Fatal(err)
	}
	// More than a tick of the clock that stamps files.
	time.Sleep(30 * time.Millisecond)
	if err := s.Label(bg, "first", h); err != nil {
		t.Fatal(err)
	}
	if syncs != 1 {
		t.Errorf("%d syncs of data/ labelling a blob another process wrote, want 1", syncs)
	}
	if err := s.Label(bg, "second", h); err != nil {
		t.Fatal(err)
	}
	if syncs != 1 {
		t.Errorf("%d syncs of data/ labelling it again, want still 1", syncs)
	}
	// Another one, written after that sync: synced again.
	content2 := []byte("written by Theater, later")
	h2, _ := store.Sum(content2)
	if err := os.WriteFile(filepath.Join(dir, "data", h2.String()), content2, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Store(bg, content2); err != nil {
		t.Fatal(err)
	}
	if syncs != 2 {
		t.Errorf("%d syncs of data/ after storing content another process wrote since, want 2", syncs)
	}
}

// TestSyncfsFailure: when the flush shared by several writers fails, each
// of their stores fails with the error, none is acknowledged, and once
// flushes work again the same content stores and reads back.
func TestSyncfsFailure(t *testing.T) {
	s := openAt(t, filepath.Join(t.TempDir(), "store"), store.Options{Logger: quiet})
	var fail atomic.Bool
	var failed atomic.Int64
	fail.Store(true)
	store.FailSyncfs(s, &fail, &failed)
	var mu sync.Mutex
	var failedContent [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for round := 0; failed.Load() < 3; round++ {
		if time.Now().After(deadline) {
			t.Fatalf("no shared flush in 10 s of 8 writers (%d failed)", failed.Load())
		}
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				c := []byte(fmt.Sprintf("round %d writer %d", round, w))
				_, err := s.Store(bg, c)
				if err == nil {
					return
				}
				if !errors.Is(err, syscall.EIO) {
					t.Errorf("Store: %v, want EIO", err)
				}
				mu.Lock()
				failedContent = append(failedContent, c)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	if len(failedContent) == 0 {
		t.Fatal("syncfs failed, and every store succeeded")
	}
	fail.Store(false)
	for _, c := range failedContent {
		h, err := s.Store(bg, c)
		if err != nil {
			t.Fatalf("Store after flushes work again: %v", err)
		}
		got, err := s.Get(bg, h)
		if err != nil || !bytes.Equal(got, c) {
			t.Fatalf("Get = %q, %v; want %q", got, err, c)
		}
	}
}

// failFirstDataSync runs test, with group commit and with one fsync per
// blob, on a store whose first fsync of data/ fails; *syncs counts them.
func failFirstDataSync(t *testing.T, test func(t *testing.T, dir string, s *store.Store, syncs *int)) {
	for _, mode := range []struct {
		name string
		opts store.Options
	}{{"group commit", store.Options{}}, {"one fsync per blob", store.Options{NoGroupCommit: true}}} {
		t.Run(mode.name, func(t *testing.T) {
			mode.opts.Logger = quiet
			dir := filepath.Join(t.TempDir(), "store")
			s := openAt(t, dir, mode.opts)
			var syncs int
			store.FailDataSyncs(s, 1, &syncs)
			test(t, dir, s, &syncs)
		})
	}
}

// TestReadKeepsAtime: reading a blob does not dirty its inode with a new
// access time (which the next group commit's syncfs would have to write).
func TestReadKeepsAtime(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s := openAt(t, dir, store.Options{})
	h, err := s.Store(bg, []byte("read me"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "data", h.String())
	// An access time older than the modification: relatime updates it on
	// the next read, as strictatime does.
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(path, old, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, get := range []func() error{
		func() error { _, err := s.Get(bg, h); return err },
		func() error {
			f, _, err := s.Open(bg, h)
			if err == nil {
				_, err = io.ReadAll(f)
				f.Close()
			}
			return err
		},
	} {
		if err := get(); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		if got := time.Unix(st.Atim.Unix()); got.After(old.Add(time.Second)) {
			t.Errorf("reading the blob moved its atime from %v to %v", old, got)
		}
	}
}
