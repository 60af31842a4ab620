package store_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// Helpers shared by the store tests. They live in package store_test so that
// nothing here can collide with identifiers other files add to package store.

var bg = context.Background()

// quiet is a logger that drops everything: the store logs what it skips, and
// the tests check behaviour, not log lines.
var quiet = slog.New(slog.DiscardHandler)

// sha is the plain SHA-1 of b, computed independently of the store's hasher.
func sha(b []byte) store.Hash { return store.Hash(sha1.Sum(b)) }

func shaStr(s string) store.Hash { return sha([]byte(s)) }

// openAt opens the store in dir and closes it when the test ends.
func openAt(t testing.TB, dir string, opts store.Options) *store.Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = quiet
	}
	s, err := store.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newStore opens a fresh store in a temp directory and returns it with its
// directory.
func newStore(t testing.TB) (*store.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	return openAt(t, dir, store.Options{}), dir
}

func mustStore(t testing.TB, s *store.Store, content string) store.Hash {
	t.Helper()
	h, err := s.Store(bg, []byte(content))
	if err != nil {
		t.Fatalf("Store(%q): %v", content, err)
	}
	if want := shaStr(content); h != want {
		t.Fatalf("Store(%q) = %s, want %s", content, h, want)
	}
	return h
}

func mustLabel(t testing.TB, s *store.Store, name string, h store.Hash) {
	t.Helper()
	if err := s.Label(bg, name, h); err != nil {
		t.Fatalf("Label(%q, %s): %v", name, h, err)
	}
}

func mustRefs(t testing.TB, s *store.Store, name string) []store.Hash {
	t.Helper()
	refs, err := s.GetByLabel(bg, name)
	if err != nil {
		t.Fatalf("GetByLabel(%q): %v", name, err)
	}
	return refs
}

func wantRefs(t testing.TB, s *store.Store, name string, want ...store.Hash) {
	t.Helper()
	got := mustRefs(t, s, name)
	if !slices.Equal(got, want) {
		t.Fatalf("GetByLabel(%q) = %v, want %v", name, got, want)
	}
}

// wantErr fails unless errors.Is(err, target).
func wantErr(t testing.TB, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: err = %v, want errors.Is(err, %v)", what, err, target)
	}
}

// labelFile returns the raw bytes of labels/<name>.
func labelFile(t testing.TB, dir, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, store.LabelsDir, filepath.FromSlash(name)))
	if err != nil {
		t.Fatalf("reading label file %q: %v", name, err)
	}
	return b
}

func labelFileExists(dir, name string) bool {
	_, err := os.Lstat(filepath.Join(dir, store.LabelsDir, filepath.FromSlash(name)))
	return err == nil
}

// joinRefs is a label file as Theater writes it.
func joinRefs(refs ...store.Hash) []byte {
	s := make([]string, len(refs))
	for i, h := range refs {
		s[i] = h.String()
	}
	return []byte(strings.Join(s, "\n"))
}

// dirNames lists the names in a directory, sorted; a missing directory is
// empty.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ReadDir(%s): %v", dir, err)
	}
	out := []string{}
	for _, de := range des {
		out = append(out, de.Name())
	}
	return out
}

// dataNames lists data/.
func dataNames(t testing.TB, dir string) []string {
	t.Helper()
	return dirNames(t, filepath.Join(dir, store.DataDir))
}

// tmpSpools lists the temp files in tmp/ (the verdict log excepted). s,
// the store open on dir if any, first stops making spool files ahead of
// need and removes those it had ready, so that what is left is what the
// operations before left.
func tmpSpools(t testing.TB, s *store.Store, dir string) []string {
	t.Helper()
	if s != nil {
		store.StopSpoolMaker(s)
		waitClaims(t, s)
	}
	var out []string
	for _, n := range dirNames(t, filepath.Join(dir, store.TmpDir)) {
		if n != "verified" {
			out = append(out, n)
		}
	}
	return out
}

// waitClaims waits until s has unlinked from tmp/ every claimed spool it
// linked into data/: the syncer does once a flush has covered the links.
func waitClaims(t testing.TB, s *store.Store) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for store.ClaimsOut(s) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d claimed spools still in tmp/ after 10 s", store.ClaimsOut(s))
		}
		time.Sleep(time.Millisecond)
	}
}

func inode(t testing.TB, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("Lstat(%s): %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func blobPath(dir string, h store.Hash) string {
	return filepath.Join(dir, store.DataDir, h.String())
}

// snapshotOutside is treeSnapshot of parent without its entry store and
// what is below it: what a store may never touch.
func snapshotOutside(t testing.TB, parent, store string) map[string]string {
	t.Helper()
	snap := treeSnapshot(t, parent)
	for k := range snap {
		if k == store || strings.HasPrefix(k, store+"/") {
			delete(snap, k)
		}
	}
	return snap
}

// treeSnapshot records every path under root with its type, size and
// content hash, to prove that nothing changed there.
func treeSnapshot(t testing.TB, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += " " + sha(b).String()
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return out
}

func diffSnapshots(before, after map[string]string) []string {
	var diff []string
	for k, v := range before {
		if after[k] != v {
			diff = append(diff, "changed or removed: "+k)
		}
	}
	for k := range after {
		if _, ok := before[k]; !ok {
			diff = append(diff, "added: "+k)
		}
	}
	sort.Strings(diff)
	return diff
}

func sortHashes(hs []store.Hash) []store.Hash {
	out := slices.Clone(hs)
	slices.SortFunc(out, func(a, b store.Hash) int { return bytes.Compare(a[:], b[:]) })
	return out
}

func hashStrings(hs []store.Hash) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.String()
	}
	return out
}

func mkfifo(path string) error { return syscall.Mkfifo(path, 0o644) }

// hasProblem reports whether an fsck report names this problem.
func hasProblem(rep *store.FsckReport, kind, name string) bool {
	for _, p := range rep.Problems {
		if p.Kind == kind && p.Name == name {
			return true
		}
	}
	return false
}
