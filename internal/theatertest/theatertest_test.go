package theatertest_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

var (
	hashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)
	uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
)

// event mirrors Theater's ChainEvent for parsing stored blobs.
type event struct {
	Hash        json.RawMessage `json:"hash"`
	ParentHash  []int           `json:"parent_hash"`
	EventType   string          `json:"event_type"`
	Data        []int           `json:"data"`
	Timestamp   uint64          `json:"timestamp"`
	Description *string         `json:"description"`
}

func writeStore(t *testing.T, opts theatertest.Options) (string, *theatertest.Manifest) {
	t.Helper()
	dir := t.TempDir()
	m, err := theatertest.WriteStore(dir, opts)
	if err != nil {
		t.Fatalf("WriteStore: %v", err)
	}
	return dir, m
}

func TestSha1Hex(t *testing.T) {
	t.Parallel()
	if got, want := theatertest.Sha1Hex(nil), "da39a3ee5e6b4b0d3255bfef95601890afd80709"; got != want {
		t.Errorf("Sha1Hex(nil) = %s, want %s", got, want)
	}
	if got, want := theatertest.Sha1Hex([]byte("abc")), "a9993e364706816aba3e25717850c26c9cd0d89d"; got != want {
		t.Errorf("Sha1Hex(abc) = %s, want %s", got, want)
	}
}

func TestChainEventJSONExact(t *testing.T) {
	t.Parallel()
	parent := make([]byte, 20)
	for i := range parent {
		parent[i] = byte(i * 13)
	}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{
			name: "root",
			got:  theatertest.ChainEventJSON(nil, "message", []byte("{}"), 1740000004, "event 4"),
			want: `{"hash":[],"parent_hash":null,"event_type":"message","data":[123,125],"timestamp":1740000004,"description":"event 4"}`,
		},
		{
			name: "with parent",
			got:  theatertest.ChainEventJSON(parent, "message", []byte(`{"n":4}`), 1740000004, "event 4"),
			want: `{"hash":[],"parent_hash":[0,13,26,39,52,65,78,91,104,117,130,143,156,169,182,195,208,221,234,247],"event_type":"message","data":[123,34,110,34,58,52,125],"timestamp":1740000004,"description":"event 4"}`,
		},
		{
			name: "null description, empty data",
			got:  theatertest.ChainEventJSONNoDescription(nil, "init", nil, 0),
			want: `{"hash":[],"parent_hash":null,"event_type":"init","data":[],"timestamp":0,"description":null}`,
		},
		{
			name: "serde_json string escaping",
			got:  theatertest.ChainEventJSON(nil, "a\"b\\c", []byte{0, 255}, 18446744073709551615, "x\n\t\r\b\f\x01\x1f\x7f</>&é\u2028"),
			want: `{"hash":[],"parent_hash":null,"event_type":"a\"b\\c","data":[0,255],"timestamp":18446744073709551615,"description":"x\n\t\r\b\f\u0001\u001f` + "\x7f</>&é\u2028" + `"}`,
		},
	}
	for _, tc := range tests {
		if string(tc.got) != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.name, tc.got, tc.want)
		}
		if !json.Valid(tc.got) {
			t.Errorf("%s: not valid JSON: %s", tc.name, tc.got)
		}
	}
}

func TestWriteBlobAndLabel(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h1, err := theatertest.WriteBlob(dir, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := theatertest.WriteBlob(dir, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if h1 != h2 || h1 != theatertest.Sha1Hex([]byte("hello")) {
		t.Fatalf("hashes %s %s", h1, h2)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != h1 {
		t.Fatalf("data dir = %v, want just %s", entries, h1)
	}

	if err := theatertest.WriteLabel(dir, "a/b/c:d e", []string{h1, h1}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "labels", "a", "b", "c:d e"))
	if err != nil {
		t.Fatal(err)
	}
	if want := h1 + "\n" + h1; string(got) != want {
		t.Fatalf("label content %q, want %q", got, want)
	}
	// Overwrite with a single ref: no leftover bytes, no trailing newline.
	if err := theatertest.WriteLabel(dir, "a/b/c:d e", []string{h1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "labels", "a", "b", "c:d e")); string(got) != h1 {
		t.Fatalf("label content %q, want %q", got, h1)
	}
	for _, bad := range []string{"", "/abs", "a/../../x", "a//b", "./a", "a/"} {
		if err := theatertest.WriteLabel(dir, bad, []string{h1}); err == nil {
			t.Errorf("WriteLabel(%q) succeeded, want error", bad)
		}
	}
}

func TestNewActorID(t *testing.T) {
	t.Parallel()
	r1 := rand.New(rand.NewSource(42))
	r2 := rand.New(rand.NewSource(42))
	for range 100 {
		a, b := theatertest.NewActorID(r1), theatertest.NewActorID(r2)
		if a != b {
			t.Fatalf("not deterministic: %s vs %s", a, b)
		}
		if !uuidRE.MatchString(a) {
			t.Fatalf("not a canonical v4 UUID: %s", a)
		}
	}
}

func TestDataFilesNamedBySha1(t *testing.T) {
	t.Parallel()
	dir, m := writeStore(t, theatertest.Options{Seed: 1})
	entries, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(m.Blobs) {
		t.Errorf("%d data files, manifest has %d blobs", len(entries), len(m.Blobs))
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			t.Errorf("data/%s is not a regular file", e.Name())
			continue
		}
		if !hashRE.MatchString(e.Name()) {
			t.Errorf("data/%s: bad name", e.Name())
		}
		b, err := os.ReadFile(filepath.Join(dir, "data", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if got := theatertest.Sha1Hex(b); got != e.Name() {
			t.Errorf("data/%s has sha1 %s", e.Name(), got)
		}
		want, ok := m.Blobs[e.Name()]
		if !ok {
			t.Errorf("data/%s missing from manifest", e.Name())
		} else if !bytes.Equal(b, want) {
			t.Errorf("data/%s differs from manifest", e.Name())
		}
	}
}

func TestLabelFiles(t *testing.T) {
	t.Parallel()
	dir, m := writeStore(t, theatertest.Options{Seed: 2})
	labelsDir := filepath.Join(dir, "labels")
	found := map[string]bool{}
	err := filepath.WalkDir(labelsDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(labelsDir, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		found[name] = true
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		refs, ok := m.Labels[name]
		if !ok {
			t.Errorf("label %q not in manifest", name)
			return nil
		}
		if bytes.HasSuffix(b, []byte("\n")) {
			t.Errorf("label %q has a trailing newline", name)
		}
		if want := strings.Join(refs, "\n"); string(b) != want {
			t.Errorf("label %q = %q, want %q", name, b, want)
		}
		for _, h := range strings.Split(string(b), "\n") {
			if _, ok := m.Blobs[h]; !ok || !hashRE.MatchString(h) {
				t.Errorf("label %q refers to unknown blob %q", name, h)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range m.Labels {
		if !found[name] {
			t.Errorf("manifest label %q has no file", name)
		}
	}
}

func TestChainsWalkHeadToRoot(t *testing.T) {
	t.Parallel()
	opts := theatertest.Options{Seed: 3, Actors: 4, ChainLength: 7}
	dir, m := writeStore(t, opts)
	if len(m.Actors) != 4 || len(m.Chains) != 4 {
		t.Fatalf("got %d actors, %d chains", len(m.Actors), len(m.Chains))
	}
	if !slices.IsSorted(m.Actors) {
		t.Errorf("actors not sorted: %v", m.Actors)
	}
	nullDesc := 0
	for _, id := range m.Actors {
		head, err := os.ReadFile(filepath.Join(dir, "labels", id+":chain-head"))
		if err != nil {
			t.Fatal(err)
		}
		var walked []string
		for h := string(head); ; {
			walked = append(walked, h)
			b, err := os.ReadFile(filepath.Join(dir, "data", h))
			if err != nil {
				t.Fatalf("actor %s: %v", id, err)
			}
			var ev event
			if err := json.Unmarshal(b, &ev); err != nil {
				t.Fatalf("actor %s: event %s: %v", id, h, err)
			}
			if string(ev.Hash) != "[]" {
				t.Errorf("event %s: hash = %s, want []", h, ev.Hash)
			}
			if ev.Description == nil {
				nullDesc++
			}
			// Re-encoding must reproduce the stored bytes exactly.
			var parent []byte
			if ev.ParentHash != nil {
				parent = make([]byte, len(ev.ParentHash))
				for i, x := range ev.ParentHash {
					parent[i] = byte(x)
				}
			}
			data := make([]byte, len(ev.Data))
			for i, x := range ev.Data {
				data[i] = byte(x)
			}
			var re []byte
			if ev.Description == nil {
				re = theatertest.ChainEventJSONNoDescription(parent, ev.EventType, data, ev.Timestamp)
			} else {
				re = theatertest.ChainEventJSON(parent, ev.EventType, data, ev.Timestamp, *ev.Description)
			}
			if !bytes.Equal(re, b) {
				t.Errorf("event %s does not round-trip:\n got %s\nwant %s", h, re, b)
			}
			if !json.Valid(data) {
				t.Errorf("event %s: payload is not JSON: %q", h, data)
			}
			if ev.ParentHash == nil {
				break
			}
			if len(parent) != 20 {
				t.Fatalf("event %s: parent_hash has %d bytes", h, len(parent))
			}
			h = hex.EncodeToString(parent)
		}
		slices.Reverse(walked)
		if !reflect.DeepEqual(walked, m.Chains[id]) {
			t.Errorf("actor %s: walked %v, manifest %v", id, walked, m.Chains[id])
		}
		if len(walked) != opts.ChainLength {
			t.Errorf("actor %s: chain length %d, want %d", id, len(walked), opts.ChainLength)
		}
	}
	if nullDesc == 0 {
		t.Error("no event with a null description was generated")
	}
}

func TestStoreContents(t *testing.T) {
	t.Parallel()
	dir, m := writeStore(t, theatertest.Options{})
	if len(m.Actors) != theatertest.DefaultActors {
		t.Errorf("%d actors, want %d", len(m.Actors), theatertest.DefaultActors)
	}
	for _, id := range m.Actors {
		if !uuidRE.MatchString(id) {
			t.Errorf("actor id %q is not a canonical UUID", id)
		}
		for _, l := range []string{id + ":chain-head", "actor:" + id, id + ":state"} {
			if refs := m.Labels[l]; len(refs) != 1 {
				t.Errorf("label %q has refs %v, want 1", l, refs)
			}
		}
		if got := m.Labels[id+":chain-head"][0]; got != m.Chains[id][len(m.Chains[id])-1] {
			t.Errorf("actor %s: chain-head %s is not the chain's last event", id, got)
		}
	}

	empty := theatertest.Sha1Hex(nil)
	if b, ok := m.Blobs[empty]; !ok || len(b) != 0 {
		t.Errorf("empty blob missing from manifest")
	}
	if fi, err := os.Stat(filepath.Join(dir, "data", empty)); err != nil || fi.Size() != 0 {
		t.Errorf("empty blob file: %v, %v", fi, err)
	}
	if !reflect.DeepEqual(m.Labels[theatertest.LabelEmpty], []string{empty}) {
		t.Errorf("label %q = %v", theatertest.LabelEmpty, m.Labels[theatertest.LabelEmpty])
	}

	multi, nested, colonSpace := 0, 0, 0
	for name, refs := range m.Labels {
		if len(refs) >= 2 && len(refs) <= 4 {
			multi++
		}
		if strings.Contains(name, "/") {
			nested++
		}
		if strings.Contains(name, ":") && strings.Contains(name, " ") {
			colonSpace++
		}
	}
	if multi < 2 || nested < 2 || colonSpace < 1 {
		t.Errorf("multi-ref=%d nested=%d colon+space=%d", multi, nested, colonSpace)
	}
	if fi, err := os.Stat(filepath.Join(dir, "labels", "team", "alpha")); err != nil || !fi.IsDir() {
		t.Errorf("labels/team/alpha is not a directory: %v", err)
	}

	// Unreachable = blobs reachable neither from labels nor via parent links.
	if len(m.Unreachable) < 2 {
		t.Fatalf("only %d unreachable blobs", len(m.Unreachable))
	}
	reach := map[string]bool{}
	for _, refs := range m.Labels {
		for _, h := range refs {
			reach[h] = true
		}
	}
	for _, chain := range m.Chains {
		for _, h := range chain {
			reach[h] = true // every chain event is an ancestor of its head
		}
	}
	var want []string
	for h := range m.Blobs {
		if !reach[h] {
			want = append(want, h)
		}
	}
	slices.Sort(want)
	if !reflect.DeepEqual(want, m.Unreachable) {
		t.Errorf("Unreachable = %v, want %v", m.Unreachable, want)
	}

	// Deduplication: some blob must be referenced by more than one label.
	refCount := map[string]int{}
	for _, refs := range m.Labels {
		for _, h := range refs {
			refCount[h]++
		}
	}
	shared := false
	for _, n := range refCount {
		shared = shared || n > 1
	}
	if !shared {
		t.Error("no blob is shared between labels")
	}
}

func TestDeterministic(t *testing.T) {
	t.Parallel()
	opts := theatertest.Options{Seed: 99, Actors: 2, ChainLength: 3, PlainBlobs: 4}
	dirA, a := writeStore(t, opts)
	dirB, b := writeStore(t, opts)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same options produced different manifests")
	}
	if ta, tb := tree(t, dirA), tree(t, dirB); !reflect.DeepEqual(ta, tb) {
		t.Fatal("same options produced different file trees")
	}
	_, c := writeStore(t, theatertest.Options{Seed: 100, Actors: 2, ChainLength: 3, PlainBlobs: 4})
	if reflect.DeepEqual(a.Actors, c.Actors) {
		t.Error("different seeds produced the same actors")
	}
}

// tree returns relative path -> content for every file under dir.
func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		out[filepath.ToSlash(rel)] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
