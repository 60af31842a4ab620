package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// collisionDir holds the public SHA-1 collision pairs: each pair has the
// same plain SHA-1 and different content.
const collisionDir = "testdata/sha1-collisions"

// TestCollisionsRefused: content carrying a SHA-1 collision attack (the
// SHAttered PDFs, the SHA-1-is-a-Shambles pair) is refused through the mount
// (cp fails with EIO, leaving no label, no blob, nothing in tmp/; an
// existing label keeps its content) and by the CLI (put exits 1 with one
// line naming the collision). A blob Theater stored under the pair's SHA-1
// stays as it was, is never served, and fsck names it.
func TestCollisionsRefused(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	for _, pair := range []struct{ name, a, b, sha string }{
		{"shattered", "shattered-1.pdf", "shattered-2.pdf", "38762cf7f55934b34d179ae6a4c80cadccbb7f0a"},
		{"sha-mbles", "sha-mbles-1.bin", "sha-mbles-2.bin", "8ac60ba76f1999a1ab70223f225aefdc78d4ddc0"},
	} {
		t.Run(pair.name, func(t *testing.T) {
			t.Parallel()
			a, err := filepath.Abs(filepath.Join(collisionDir, pair.a))
			if err != nil {
				t.Fatal(err)
			}
			b := filepath.Join(filepath.Dir(a), pair.b)
			for _, f := range []string{a, b} {
				content, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if sha1Hex(content) != pair.sha {
					t.Fatalf("%s: plain SHA-1 %s, want %s", f, sha1Hex(content), pair.sha)
				}
			}
			store, _ := theaterStore(t, theatertest.Options{Seed: 21, Actors: 1, ChainLength: 2, PlainBlobs: 2})
			mnt := mountStore(t, store)
			mustSh(t, mnt, "echo before > by-label/kept")
			before := withoutTmp(treeSnapshot(t, store))

			// Through the mount: a new label, and over an existing one.
			shFails(t, mnt, "cp "+q(a)+" by-label/x", "Input/output error")
			shFails(t, mnt, "cp "+q(b)+" by-label/kept", "Input/output error")
			shFails(t, mnt, "cat by-label/x", "No such file or directory")
			if got := lines(mustSh(t, mnt, "ls by-label")); slices.Contains(got, "x") {
				t.Errorf("ls by-label = %q after a refused collision: x is listed", got)
			}
			wantLabelContent(t, mnt, store, "kept", []byte("before\n")) // also: tmp/ holds only verified
			if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
				t.Errorf("a refused collision through the mount changed the store: %s", d)
			}

			// The CLI: one line naming the collision, exit 1.
			for _, args := range [][]string{
				{"put", b},
				{"put", "--label", "y", a},
				{"put", "--label", "kept", "--replace", b},
			} {
				r := cli(t, append([]string{"--store", store}, args...)...)
				wantOneLineError(t, r, 1, "collision")
				if r.stdout != "" {
					t.Errorf("%s printed %q on stdout", r.cmd, r.stdout)
				}
			}
			r := sh(t, "/", q(bin)+" --store "+q(store)+" put < "+q(a))
			wantOneLineError(t, r, 1, "collision")
			checkStore(t, store).wantLabel(t, "kept", []byte("before\n"))
			if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
				t.Errorf("a refused collision through the CLI changed the store: %s", d)
			}

			// A blob Theater stored under the pair's SHA-1 (Theater does not
			// detect collisions) stays as it was, and is never served.
			if _, err := theatertest.WriteBlob(store, mustRead(t, a)); err != nil {
				t.Fatal(err)
			}
			blob := filepath.Join(store, "data", pair.sha)
			fi, err := os.Stat(blob)
			if err != nil {
				t.Fatal(err)
			}
			shFails(t, mnt, "cp "+q(b)+" by-label/z", "Input/output error")
			wantOneLineError(t, cli(t, "--store", store, "put", "--label", "z", b), 1, "collision")
			wantOneLineError(t, cli(t, "--store", store, "put", a), 1, "collision")
			if got := mustRead(t, blob); string(got) != string(mustRead(t, a)) {
				t.Errorf("data/%s: the existing blob was overwritten", pair.sha)
			}
			if fi2, err := os.Stat(blob); err != nil || !fi2.ModTime().Equal(fi.ModTime()) || fi2.Size() != fi.Size() {
				t.Errorf("data/%s: the existing blob was touched: %v, %v -> %v", pair.sha, err, fi.ModTime(), fi2.ModTime())
			}
			shFails(t, mnt, "cat by-hash/"+pair.sha, "Input/output error")
			if r := cli(t, "--store", store, "get", pair.sha); r.code != 1 || r.stdout != "" {
				t.Errorf("get of the colliding blob: want exit 1 and nothing on stdout:\n%s", abbrevResult(r))
			}
			r = fsck(t, store)
			if r.code != 1 || !strings.Contains(r.stdout, pair.sha) || !strings.Contains(r.stdout, "collision") {
				t.Errorf("fsck: want exit 1 naming %s and the collision:\n%s", pair.sha, r)
			}
			st := checkStore(t, store)
			st.wantNoLabel(t, "x")
			st.wantNoLabel(t, "y")
			st.wantNoLabel(t, "z")
			st.wantLabel(t, "kept", []byte("before\n"))
		})
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
