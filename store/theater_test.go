package store_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
)

func writeTheaterStore(t *testing.T, opts theatertest.Options) (string, *theatertest.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	m, err := theatertest.WriteStore(dir, opts)
	if err != nil {
		t.Fatalf("WriteStore: %v", err)
	}
	return dir, m
}

func mustHash(t testing.TB, s string) store.Hash {
	t.Helper()
	h, err := store.ParseHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

var theaterStores = []struct {
	name string
	opts theatertest.Options
}{
	{"defaults", theatertest.Options{Seed: 1}},
	{"one actor, long chain", theatertest.Options{Seed: 2, Actors: 1, ChainLength: 40, PlainBlobs: 3}},
	{"many actors", theatertest.Options{Seed: 3, Actors: 12, ChainLength: 2, PlainBlobs: 31}},
}

// checkAgainstManifest checks every label, blob and chain of the store
// against what theatertest wrote.
func checkAgainstManifest(t *testing.T, s *store.Store, m *theatertest.Manifest) {
	t.Helper()
	labels, err := s.ListLabels(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(maps.Keys(m.Labels)); !slices.Equal(labels, want) {
		t.Fatalf("ListLabels = %q\nwant %q", labels, want)
	}
	for name, refs := range m.Labels {
		got, err := s.GetByLabel(bg, name)
		if err != nil {
			t.Fatalf("GetByLabel(%q): %v", name, err)
		}
		if !slices.Equal(hashStrings(got), refs) {
			t.Fatalf("GetByLabel(%q) = %v, want %v", name, got, refs)
		}
	}
	all, err := s.ListAllContent(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := slices.Sorted(maps.Keys(m.Blobs)); !slices.Equal(hashStrings(all), want) {
		t.Fatalf("ListAllContent = %v\nwant %v", hashStrings(all), want)
	}
	var total int64
	for hs, content := range m.Blobs {
		total += int64(len(content))
		got, err := s.Get(bg, mustHash(t, hs))
		if err != nil {
			t.Fatalf("Get(%s): %v", hs, err)
		}
		if !bytes.Equal(got, content) {
			t.Fatalf("Get(%s) = %q, want %q", hs, got, content)
		}
	}
	size, err := s.CalculateTotalSize(bg)
	if err != nil || size != total {
		t.Fatalf("CalculateTotalSize = %d, %v; want %d", size, err, total)
	}
	for _, actor := range m.Actors {
		links, broken, err := s.Chain(bg, actor)
		if err != nil || broken != nil {
			t.Fatalf("Chain(%s): %v, broken %v", actor, err, broken)
		}
		want := slices.Clone(m.Chains[actor])
		slices.Reverse(want) // newest first
		var got []string
		for _, l := range links {
			got = append(got, l.Hash.String())
		}
		if !slices.Equal(got, want) {
			t.Fatalf("Chain(%s) = %v\nwant %v", actor, got, want)
		}
		for i, l := range links {
			if i == len(links)-1 {
				if l.Event.Parent != nil {
					t.Fatalf("root event %s has a parent", l.Hash)
				}
				if l.Event.EventType != "init" {
					t.Fatalf("root event type %q", l.Event.EventType)
				}
				continue
			}
			if l.Event.Parent == nil || *l.Event.Parent != links[i+1].Hash {
				t.Fatalf("event %s: parent %v, want %s", l.Hash, l.Event.Parent, links[i+1].Hash)
			}
			if l.Event.Timestamp <= links[i+1].Event.Timestamp {
				t.Fatalf("event %s: timestamps not increasing along the chain", l.Hash)
			}
		}
	}
}

func TestTheaterStoreOpensAsIs(t *testing.T) {
	for _, c := range theaterStores {
		t.Run(c.name, func(t *testing.T) {
			dir, m := writeTheaterStore(t, c.opts)
			before := treeSnapshot(t, dir)
			s := openAt(t, dir, store.Options{})
			checkAgainstManifest(t, s, m)

			rep, err := s.Verify(bg, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Problems) != 0 {
				t.Fatalf("Verify found problems in a Theater store: %v", rep.Problems)
			}
			if rep.Blobs != len(m.Blobs) || rep.Labels != len(m.Labels) {
				t.Fatalf("Verify counted %d blobs %d labels, want %d %d", rep.Blobs, rep.Labels, len(m.Blobs), len(m.Labels))
			}

			// Opening, reading and verifying changed nothing but adding tmp/.
			after := treeSnapshot(t, dir)
			for k := range after {
				if k == store.TmpDir || filepath.Dir(k) == store.TmpDir {
					delete(after, k)
				}
			}
			if d := diffSnapshots(before, after); len(d) != 0 {
				t.Fatalf("reading a Theater store changed it: %v", d)
			}
			if top := dirNames(t, dir); !slices.Equal(top, []string{store.DataDir, store.LabelsDir, store.TmpDir}) {
				t.Fatalf("store holds %v", top)
			}
		})
	}
}

func TestTheaterStoreReadOnly(t *testing.T) {
	dir, m := writeTheaterStore(t, theatertest.Options{Seed: 9})
	before := treeSnapshot(t, dir)
	s := openAt(t, dir, store.Options{ReadOnly: true})
	checkAgainstManifest(t, s, m)
	if d := diffSnapshots(before, treeSnapshot(t, dir)); len(d) != 0 {
		t.Fatalf("a read-only Open changed the store: %v", d)
	}
}

// What we write is what Theater writes: the same blob files and label
// files, byte for byte.
func TestWeWriteTheaterFormat(t *testing.T) {
	ours := filepath.Join(t.TempDir(), "ours")
	theirs := filepath.Join(t.TempDir(), "theirs")
	s := openAt(t, ours, store.Options{})
	contents := []string{"one", "two", "", "three\n"}
	var refs []string
	for _, c := range contents {
		h, err := s.PutAtLabel(bg, "team/alpha:notes", []byte(c))
		if err != nil {
			t.Fatal(err)
		}
		hs, err := theatertest.WriteBlob(theirs, []byte(c))
		if err != nil || hs != h.String() {
			t.Fatalf("Theater names %q %s, we %s (%v)", c, hs, h, err)
		}
		refs = append(refs, hs)
	}
	if _, err := s.ReplaceContentAtLabel(bg, "single", []byte("one")); err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(theirs, "team/alpha:notes", refs); err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(theirs, "single", refs[:1]); err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, sub := range []string{store.DataDir, store.LabelsDir} {
		a, b := treeSnapshot(t, filepath.Join(ours, sub)), treeSnapshot(t, filepath.Join(theirs, sub))
		// Compare names, types and contents, not permission bits.
		strip := func(m map[string]string) map[string]string {
			out := map[string]string{}
			for k, v := range m {
				out[k] = v[:1] + v[10:]
			}
			return out
		}
		if d := diffSnapshots(strip(b), strip(a)); len(d) != 0 {
			t.Fatalf("%s/ differs from Theater's: %v", sub, d)
		}
	}
}

func TestChainMissingAndBroken(t *testing.T) {
	dir, m := writeTheaterStore(t, theatertest.Options{Seed: 5, Actors: 1, ChainLength: 6})
	actor := m.Actors[0]
	chain := m.Chains[actor]
	s := openAt(t, dir, store.Options{})

	_, _, err := s.Chain(bg, "00000000-0000-4000-8000-000000000000")
	wantErr(t, "Chain(unknown actor)", err, store.ErrNotFound)

	// A chain-head holding two refs: the chain starts at the newest, as
	// the mount's chain/ does.
	head := store.ChainHeadLabel(actor)
	if err := s.Label(bg, head, mustHash(t, chain[1])); err != nil {
		t.Fatal(err)
	}
	links, broken, err := s.Chain(bg, actor)
	if err != nil || broken != nil || len(links) != 2 || links[0].Hash != mustHash(t, chain[1]) {
		t.Fatalf("Chain with a two-ref head = %d links, %v; want 2 from %s", len(links), err, chain[1])
	}
	if err := s.ReplaceAtLabel(bg, head, mustHash(t, chain[len(chain)-1])); err != nil {
		t.Fatal(err)
	}

	// Remove an event in the middle: the chain ends there, reported.
	if err := os.Remove(blobPath(dir, mustHash(t, chain[2]))); err != nil {
		t.Fatal(err)
	}
	links, broken, err = s.Chain(bg, actor)
	if err != nil {
		t.Fatal(err)
	}
	if len(links) != 3 || broken == nil || !errors.Is(broken, store.ErrNotFound) {
		t.Fatalf("Chain with a missing event: %d links, broken %v; want 3 links and a not-found break", len(links), broken)
	}

	// WalkChain from any event, with and without a limit. (A cycle cannot
	// be built from real events: each hash depends on its parent's.)
	ev1 := theatertest.ChainEventJSON(nil, "root", nil, 1, "")
	h1 := mustStore(t, s, string(ev1))
	ev2 := theatertest.ChainEventJSON(h1[:], "next", nil, 2, "")
	h2 := mustStore(t, s, string(ev2))
	links, broken = s.WalkChain(bg, h2, 0)
	if broken != nil || len(links) != 2 || links[0].Hash != h2 || links[1].Hash != h1 {
		t.Fatalf("WalkChain = %v, %v", links, broken)
	}
	links, broken = s.WalkChain(bg, h2, 1)
	if broken != nil || len(links) != 1 {
		t.Fatalf("WalkChain with limit 1 = %d links, %v", len(links), broken)
	}
	// An event that does not parse ends the walk.
	junk := mustStore(t, s, "not json")
	ev3 := theatertest.ChainEventJSON(junk[:], "after-junk", nil, 3, "")
	h3 := mustStore(t, s, string(ev3))
	links, broken = s.WalkChain(bg, h3, 0)
	if len(links) != 1 || broken == nil {
		t.Fatalf("WalkChain over junk = %d links, %v", len(links), broken)
	}
}

func blobSet(t *testing.T, dir string) map[string]bool {
	out := map[string]bool{}
	for _, n := range dataNames(t, dir) {
		out[n] = true
	}
	return out
}

func TestGCRemovesExactlyUnreachable(t *testing.T) {
	for _, c := range theaterStores {
		t.Run(c.name, func(t *testing.T) {
			dir, m := writeTheaterStore(t, c.opts)
			s := openAt(t, dir, store.Options{})
			if len(m.Unreachable) == 0 {
				t.Fatal("fixture has no unreachable blobs")
			}
			var unreachableBytes int64
			for _, h := range m.Unreachable {
				unreachableBytes += int64(len(m.Blobs[h]))
			}

			// Dry run: reports, removes nothing (tmp/, ours, may gain
			// verdicts from reading the chains).
			before := treeSnapshot(t, filepath.Join(dir, store.DataDir))
			rep, err := s.GC(bg, store.GCOptions{Grace: -1, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if got := hashStrings(sortHashes(rep.Removed)); !slices.Equal(got, m.Unreachable) {
				t.Fatalf("dry run would remove %v\nwant %v", got, m.Unreachable)
			}
			if !rep.DryRun || rep.Bytes != unreachableBytes || rep.Blobs != len(m.Blobs) || rep.Reachable != len(m.Blobs)-len(m.Unreachable) {
				t.Fatalf("dry run report %+v", rep)
			}
			if d := diffSnapshots(before, treeSnapshot(t, filepath.Join(dir, store.DataDir))); len(d) != 0 {
				t.Fatalf("dry run changed data/: %v", d)
			}

			rep, err = s.GC(bg, store.GCOptions{Grace: -1})
			if err != nil {
				t.Fatal(err)
			}
			if got := hashStrings(sortHashes(rep.Removed)); !slices.Equal(got, m.Unreachable) {
				t.Fatalf("GC removed %v\nwant %v", got, m.Unreachable)
			}
			if rep.Bytes != unreachableBytes || rep.Blobs != len(m.Blobs) || rep.Young != 0 {
				t.Fatalf("GC report %+v", rep)
			}
			left := blobSet(t, dir)
			for h := range m.Blobs {
				if want := !slices.Contains(m.Unreachable, h); left[h] != want {
					t.Fatalf("blob %s present=%v after GC, want %v", h, left[h], want)
				}
			}
			// Everything reachable still works, chains in full.
			for _, h := range m.Unreachable {
				delete(m.Blobs, h)
			}
			checkAgainstManifest(t, s, m)
			vrep, err := s.Verify(bg, nil)
			if err != nil || len(vrep.Problems) != 0 {
				t.Fatalf("Verify after GC: %v, %v", vrep, err)
			}

			// A ref to a missing blob is not counted among the reachable
			// blobs of data/.
			if err := s.Label(bg, "dangling", store.Hash(sha([]byte("never stored")))); err == nil {
				t.Fatal("Label with a missing blob succeeded")
			}
			if err := os.WriteFile(filepath.Join(dir, store.LabelsDir, "dangling"), []byte(sha([]byte("never stored")).String()), 0o644); err != nil {
				t.Fatal(err)
			}
			rep, err = s.GC(bg, store.GCOptions{Grace: -1, DryRun: true})
			if err != nil || rep.Reachable > rep.Blobs || rep.Reachable != len(m.Blobs) {
				t.Fatalf("dry run with a dangling ref: %+v, %v; want %d reachable of %d", rep, err, len(m.Blobs), len(m.Blobs))
			}
			os.Remove(filepath.Join(dir, store.LabelsDir, "dangling"))

			// A second run finds nothing.
			rep, err = s.GC(bg, store.GCOptions{Grace: -1})
			if err != nil || len(rep.Removed) != 0 {
				t.Fatalf("second GC removed %v, %v", rep.Removed, err)
			}
		})
	}
}

func TestGCGrace(t *testing.T) {
	dir, m := writeTheaterStore(t, theatertest.Options{Seed: 4})
	s := openAt(t, dir, store.Options{})
	n := len(m.Unreachable)

	// Default grace (zero value): everything was just written, so kept.
	rep, err := s.GC(bg, store.GCOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != 0 || rep.Young != n {
		t.Fatalf("default grace: removed %d, young %d; want 0, %d", len(rep.Removed), rep.Young, n)
	}

	// Age half of the unreachable blobs by two hours.
	old := time.Now().Add(-2 * time.Hour)
	var aged []string
	for i, h := range m.Unreachable {
		if i%2 == 0 {
			if err := os.Chtimes(blobPath(dir, mustHash(t, h)), old, old); err != nil {
				t.Fatal(err)
			}
			aged = append(aged, h)
		}
	}
	// Age a reachable one too: age alone never makes a blob collectable.
	for h := range m.Blobs {
		if !slices.Contains(m.Unreachable, h) {
			os.Chtimes(blobPath(dir, mustHash(t, h)), old, old)
			break
		}
	}
	rep, err = s.GC(bg, store.GCOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := hashStrings(sortHashes(rep.Removed)); !slices.Equal(got, aged) {
		t.Fatalf("grace 1h removed %v, want the aged %v", got, aged)
	}
	if rep.Young != n-len(aged) {
		t.Fatalf("young = %d, want %d", rep.Young, n-len(aged))
	}

	// With a clock three hours ahead, the rest go.
	rep, err = s.GC(bg, store.GCOptions{Grace: time.Hour, Now: func() time.Time { return time.Now().Add(3 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Removed) != n-len(aged) {
		t.Fatalf("late GC removed %d, want %d", len(rep.Removed), n-len(aged))
	}
	if left := len(dataNames(t, dir)); left != len(m.Blobs)-n {
		t.Fatalf("%d blobs left, want %d", left, len(m.Blobs)-n)
	}
}

// A chain-head label holding more than one ref (Theater's label appends),
// or another label naming an event in the middle of a chain, must not cut
// the chain short: every ancestor of the head stays.
func TestGCKeepsWholeChainWithExtraRefs(t *testing.T) {
	for _, variant := range []string{"two refs in chain-head", "label on a middle event"} {
		t.Run(variant, func(t *testing.T) {
			dir, m := writeTheaterStore(t, theatertest.Options{Seed: 6, Actors: 1, ChainLength: 6})
			actor := m.Actors[0]
			chain := m.Chains[actor]
			head := chain[len(chain)-1]
			switch variant {
			case "two refs in chain-head":
				if err := theatertest.WriteLabel(dir, actor+":chain-head", []string{chain[2], head}); err != nil {
					t.Fatal(err)
				}
			default:
				// "0" sorts before any actor id, so it is marked first.
				if err := theatertest.WriteLabel(dir, "0", []string{chain[2]}); err != nil {
					t.Fatal(err)
				}
			}
			s := openAt(t, dir, store.Options{})
			rep, err := s.GC(bg, store.GCOptions{Grace: -1})
			if err != nil {
				t.Fatal(err)
			}
			left := blobSet(t, dir)
			for i, h := range chain {
				if !left[h] {
					t.Errorf("chain event %d (%s) removed by GC", i, h)
				}
			}
			if got := hashStrings(sortHashes(rep.Removed)); !slices.Equal(got, m.Unreachable) {
				t.Fatalf("GC removed %v\nwant %v", got, m.Unreachable)
			}
		})
	}
}

// A label GC cannot read might reach any blob: GC must not remove anything
// on the strength of a partial view.
func TestGCRefusesWhenALabelIsUnreadable(t *testing.T) {
	dir, _ := writeTheaterStore(t, theatertest.Options{Seed: 8})
	victim := []byte("only an unreadable label points here")
	vh, err := theatertest.WriteBlob(dir, victim)
	if err != nil {
		t.Fatal(err)
	}
	// A label file over the size limit is refused as corrupt when read.
	p := filepath.Join(dir, store.LabelsDir, "huge")
	if err := os.WriteFile(p, []byte(vh+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, 16<<20+1); err != nil { // sparse
		t.Fatal(err)
	}
	s := openAt(t, dir, store.Options{})
	_, err = s.GetByLabel(bg, "huge")
	wantErr(t, "GetByLabel(huge)", err, store.ErrCorrupt)
	before := blobSet(t, dir)

	rep, err := s.GC(bg, store.GCOptions{Grace: -1})
	if err == nil {
		t.Fatalf("GC ran with an unreadable label and removed %d blobs", len(rep.Removed))
	}
	if after := blobSet(t, dir); !maps.Equal(before, after) {
		t.Fatal("GC removed blobs although a label was unreadable")
	}
}

func TestGCOldStoredAgainIsKept(t *testing.T) {
	// Storing content again refreshes its mtime, so gc's grace protects it
	// between store and label.
	s, dir := newStore(t)
	h := mustStore(t, s, "about to be labelled")
	old := time.Now().Add(-5 * time.Hour)
	os.Chtimes(blobPath(dir, h), old, old)
	mustStore(t, s, "about to be labelled")
	rep, err := s.GC(bg, store.GCOptions{Grace: time.Hour})
	if err != nil || len(rep.Removed) != 0 {
		t.Fatalf("GC removed %v, %v", rep.Removed, err)
	}
}

func TestParseChainEvent(t *testing.T) {
	parent := make([]byte, 20)
	for i := range parent {
		parent[i] = byte(200 + i)
	}
	var ph store.Hash
	copy(ph[:], parent)
	theater := theatertest.ChainEventJSON(parent, "message", []byte(`{"n":4}`), 1740000004, "event 4")

	cases := []struct {
		name    string
		in      string
		parent  *store.Hash
		typ     string
		data    string
		ts      uint64
		desc    string
		wantErr bool
	}{
		{name: "Theater's bytes", in: string(theater), parent: &ph, typ: "message", data: `{"n":4}`, ts: 1740000004, desc: "event 4"},
		{name: "root", in: string(theatertest.ChainEventJSON(nil, "init", []byte("x"), 5, "r")), typ: "init", data: "x", ts: 5, desc: "r"},
		{name: "null description", in: string(theatertest.ChainEventJSONNoDescription(nil, "init", nil, 0)), typ: "init"},
		{name: "hex parent", in: `{"parent_hash":"` + hex.EncodeToString(parent) + `","event_type":"t","data":[],"timestamp":1}`, parent: &ph, typ: "t", ts: 1},
		{name: "hash filled in", in: `{"hash":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20],"parent_hash":null,"event_type":"t","data":[104,105],"timestamp":2,"description":"d"}`, typ: "t", data: "hi", ts: 2, desc: "d"},
		{name: "unknown fields", in: `{"future":{"a":[1,2]},"parent_hash":null,"event_type":"t","data":[],"timestamp":3,"extra":true}`, typ: "t", ts: 3},
		{name: "data as string", in: `{"parent_hash":null,"event_type":"t","data":"plain","timestamp":3}`, typ: "t", data: "plain", ts: 3},
		{name: "missing fields", in: `{}`},
		{name: "parent too short", in: `{"parent_hash":[1,2,3],"event_type":"t","data":[]}`, wantErr: true},
		{name: "empty parent array", in: `{"parent_hash":[],"event_type":"t","data":[]}`, wantErr: true},
		{name: "parent not hex", in: `{"parent_hash":"zz","event_type":"t","data":[]}`, wantErr: true},
		{name: "byte out of range", in: `{"parent_hash":null,"event_type":"t","data":[256]}`, wantErr: true},
		{name: "negative byte", in: `{"parent_hash":null,"event_type":"t","data":[-1]}`, wantErr: true},
		{name: "parent is a number", in: `{"parent_hash":7,"event_type":"t","data":[]}`, wantErr: true},
		{name: "not json", in: `not json`, wantErr: true},
		{name: "array", in: `[1,2]`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev, err := store.ParseChainEvent([]byte(c.in))
			if c.wantErr {
				if err == nil {
					t.Fatalf("ParseChainEvent(%s) = %+v, want an error", c.in, ev)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (ev.Parent == nil) != (c.parent == nil) || (ev.Parent != nil && *ev.Parent != *c.parent) {
				t.Fatalf("Parent = %v, want %v", ev.Parent, c.parent)
			}
			if ev.EventType != c.typ || string(ev.Data) != c.data || ev.Timestamp != c.ts || ev.Description != c.desc {
				t.Fatalf("event = %+v", ev)
			}
		})
	}
}

func TestIsActorID(t *testing.T) {
	for s, want := range map[string]bool{
		"a1b2c3d4-0000-4000-8000-000000000000":  true,
		"A1B2C3D4-0000-4000-8000-000000000000":  false,
		"a1b2c3d4-0000-4000-8000-00000000000":   false,
		"a1b2c3d4000040008000000000000000":      false,
		"a1b2c3d4-0000-4000-8000-000000000000x": false,
		"":                                      false,
	} {
		if got := store.IsActorID(s); got != want {
			t.Errorf("IsActorID(%q) = %v", s, got)
		}
	}
	if got := store.ChainHeadLabel("x"); got != "x:chain-head" {
		t.Errorf("ChainHeadLabel = %q", got)
	}
}
