package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// readThrough reads a file of the mount from this process (the server is
// another process, so this cannot deadlock), failing the test if the read
// hangs. It returns what was read before any error.
func readThrough(t *testing.T, p string) ([]byte, error) {
	t.Helper()
	var b []byte
	err := within(t, cmdTimeout, func() error {
		var err error
		b, err = os.ReadFile(p)
		return err
	})
	return b, err
}

// fsckReport is `theater-storefs fsck --json`.
type fsckReport struct {
	Blobs    int `json:"blobs"`
	Labels   int `json:"labels"`
	Problems []struct {
		Kind   string `json:"kind"`
		Name   string `json:"name"`
		Detail string `json:"detail"`
	} `json:"problems"`
}

// fsckJSON runs fsck --json and decodes its report.
func fsckJSON(t *testing.T, store string) (fsckReport, result) {
	t.Helper()
	r := cli(t, "--store", store, "fsck", "--json")
	var rep fsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("fsck --json: not JSON (%v):\n%s", err, r)
	}
	return rep, r
}

// TestCorruptionManyBlobs: 100 blobs with bytes flipped in place (size
// kept) and 20 cut short, in a store of 170, some of them verified and
// cached by the mount before the damage. Reading each through the mount,
// by hash and by label, fails with EIO and yields not one byte; every
// other blob reads exactly; `fsck` names exactly the 120 and exits 1, as
// it exits 0 naming nothing on the store before the damage. A fresh mount
// refuses them too.
func TestCorruptionManyBlobs(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	const flipped, truncated = 100, 20
	store, m := theaterStore(t, theatertest.Options{Seed: 20, Actors: 2, ChainLength: 3, PlainBlobs: 10})
	r := rand.New(rand.NewPCG(20, 0))
	labelOf := map[string]string{} // blob -> a label naming it (as its newest ref)
	for name, refs := range m.Labels {
		labelOf[refs[len(refs)-1]] = name
	}
	var bulk []string
	for i := range flipped + truncated + 30 {
		b := make([]byte, 1+r.IntN(20000))
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		copy(b, fmt.Sprintf("bulk %d\n", i))
		h, err := theatertest.WriteBlob(store, b)
		if err != nil {
			t.Fatal(err)
		}
		m.Blobs[h] = b
		bulk = append(bulk, h)
		if i%2 == 0 {
			name := fmt.Sprintf("bulk/%d", i)
			if err := theatertest.WriteLabel(store, name, []string{h}); err != nil {
				t.Fatal(err)
			}
			labelOf[h] = name
		}
	}

	// The clean store: fsck names nothing and exits 0.
	rep, res := fsckJSON(t, store)
	if res.code != 0 || len(rep.Problems) != 0 || rep.Blobs != len(m.Blobs) {
		t.Fatalf("fsck of the clean store: want exit 0, no problems, %d blobs:\n%s", len(m.Blobs), res)
	}

	mnt := mountStore(t, store)
	// The mount verifies (and the kernel caches) some of the victims first.
	r.Shuffle(len(bulk), func(i, j int) { bulk[i], bulk[j] = bulk[j], bulk[i] })
	victims := bulk[:flipped+truncated]
	for _, h := range victims[:40] {
		if b, err := readThrough(t, filepath.Join(mnt, "by-hash", h)); err != nil || string(b) != string(m.Blobs[h]) {
			t.Fatalf("by-hash/%s before the damage: %d bytes, %v", h, len(b), err)
		}
	}

	corrupt := map[string]bool{}
	for i, h := range victims {
		p := filepath.Join(store, "data", h)
		b := slices.Clone(m.Blobs[h])
		if i < flipped {
			for range 1 + r.IntN(3) {
				b[r.IntN(len(b))] ^= byte(1 + r.IntN(255))
			}
		} else {
			b = b[:r.IntN(len(b))] // to nothing, sometimes
		}
		if sha1Hex(b) == h {
			t.Fatalf("damaging %s left its content hashing the same", h)
		}
		// In place, as Theater writes: same inode, new content.
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		corrupt[h] = true
	}

	readAll := func(mnt, when string) (eio, good int) {
		t.Helper()
		for h, want := range m.Blobs {
			paths := []string{filepath.Join(mnt, "by-hash", h)}
			if name, ok := labelOf[h]; ok {
				paths = append(paths, filepath.Join(mnt, "by-label", name))
			}
			for _, p := range paths {
				b, err := readThrough(t, p)
				rel, _ := filepath.Rel(mnt, p)
				switch {
				case corrupt[h] && len(b) > 0:
					t.Errorf("%s: %s of a corrupt blob served %d bytes (err %v); want EIO and not a byte", when, rel, len(b), err)
				case corrupt[h] && !errors.Is(err, syscall.EIO):
					t.Errorf("%s: %s of a corrupt blob: %v, want EIO", when, rel, err)
				case corrupt[h]:
					eio++
				case err != nil || string(b) != string(want):
					t.Errorf("%s: %s of a sound blob: %d bytes, %v; want its %d bytes", when, rel, len(b), err, len(want))
				default:
					good++
				}
			}
		}
		return eio, good
	}
	eio, good := readAll(mnt, "damaged while mounted")
	t.Logf("corruption: %d blobs flipped in place, %d truncated, of %d; through the mount %d reads EIO, %d sound reads exact",
		flipped, truncated, len(m.Blobs), eio, good)

	rep, res = fsckJSON(t, store)
	found := map[string]bool{}
	for _, p := range rep.Problems {
		if p.Kind != "corrupt-blob" || !corrupt[p.Name] {
			t.Errorf("fsck reports %s %s (%s), which is not one of the damaged blobs", p.Kind, p.Name, p.Detail)
		}
		if found[p.Name] {
			t.Errorf("fsck reports %s twice", p.Name)
		}
		found[p.Name] = true
	}
	if res.code != 1 || len(found) != len(corrupt) {
		t.Errorf("fsck: exit %d naming %d corrupt blobs; want exit 1 naming exactly the %d damaged; missed %q",
			res.code, len(found), len(corrupt), slices.Sorted(maps.Keys(difference(corrupt, found))))
	}
	res = fsck(t, store)
	if got := len(lines(res.stdout)); res.code != 1 || got != len(corrupt) {
		t.Errorf("fsck (text): exit %d, %d lines; want exit 1 and one line for each of the %d:\n%s", res.code, got, len(corrupt), res)
	}
	t.Logf("corruption: fsck exit %d naming %d blobs (clean store: exit 0, none)", res.code, len(found))

	// The CLI refuses them too, printing nothing.
	for _, h := range victims[:5] {
		if r := cli(t, "--store", store, "get", h); r.code != 1 || r.stdout != "" {
			t.Errorf("get of corrupt blob %s: want exit 1 and nothing on stdout:\n%s", h, abbrevResult(r))
		}
	}

	// A fresh mount, with the verdicts the first one and fsck remembered.
	if r := unmount(t, mnt); r.code != 0 {
		t.Fatalf("unmount:\n%s", r)
	}
	mnt2 := mountStore(t, store)
	readAll(mnt2, "a fresh mount")
	for h := range corrupt {
		if b, _ := os.ReadFile(filepath.Join(store, "data", h)); sha1Hex(b) == h {
			t.Errorf("data/%s was repaired behind the user's back", h)
		}
	}
}

// difference returns the keys of a that are not in b.
func difference(a, b map[string]bool) map[string]bool {
	out := map[string]bool{}
	for k := range a {
		if !b[k] {
			out[k] = true
		}
	}
	return out
}

// abbrevResult is a result with its output cut short for messages.
func abbrevResult(r result) string {
	r.stdout = abbrev([]byte(r.stdout))
	return strings.TrimSpace(r.String())
}
