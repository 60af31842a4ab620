// Package theatertest writes content stores on disk exactly the way the
// Theater actor runtime's Rust ContentStore writes them, so that the Go
// reimplementation can be tested against realistic fixtures.
//
// The layout is:
//
//	<store>/
//	  data/<40 lowercase hex sha1 of content>   one file per blob, flat
//	  labels/<label name>                        one file per label; '/' nests
//
// A label file holds one or more hashes joined by "\n" with no trailing
// newline, oldest first. Chain events are compact serde_json encodings of
// Theater's ChainEvent struct (see [ChainEventJSON]).
//
// Only the standard library is used.
package theatertest

import (
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Defaults used by [WriteStore] when an [Options] field is zero or negative.
const (
	DefaultActors      = 3
	DefaultChainLength = 5
	DefaultPlainBlobs  = 10
)

// BaseTimestamp is the timestamp (seconds) of the first chain event written
// by [WriteStore]; later events use larger timestamps.
const BaseTimestamp uint64 = 1740000000

// Options controls what WriteStore generates. Zero value = sensible small
// defaults (see DefaultActors, DefaultChainLength, DefaultPlainBlobs).
type Options struct {
	Seed        int64 // deterministic output: same Seed and counts give byte-identical stores
	Actors      int   // number of actors with chains (default 3)
	ChainLength int   // events per actor chain (default 5)
	PlainBlobs  int   // extra random plain blobs, alternately labeled and unlabeled (default 10)
}

// Manifest describes exactly what was written, so tests can compare.
type Manifest struct {
	Blobs  map[string][]byte   // hex hash -> content, one entry per data file
	Labels map[string][]string // label name -> refs, oldest first (as written in the file)
	Chains map[string][]string // actor id -> event hashes, root first ... head last
	Actors []string            // actor ids, sorted

	// Unreachable lists, sorted, the hashes of blobs that no label reaches,
	// neither directly nor through a chain event's parent_hash.
	Unreachable []string
}

// Sha1Hex returns the lowercase hex SHA-1 of b, i.e. the name Theater gives
// to a blob with content b.
func Sha1Hex(b []byte) string {
	sum := sha1.Sum(b)
	return hex.EncodeToString(sum[:])
}

// ChainEventJSON returns the bytes Theater stores for a chain event: the
// compact serde_json encoding of
//
//	{"hash":[],"parent_hash":P,"event_type":T,"data":[...],"timestamp":N,"description":D}
//
// with the fields in exactly that order and no whitespace. "hash" is always
// empty (the event is stored before its hash is known; the blob name is the
// hash). P is null when parent is nil, otherwise the parent's raw 20-byte
// SHA-1 as an array of decimal numbers (a non-nil empty parent encodes as []).
// data is encoded as an array of decimal numbers, never base64.
// Use [ChainEventJSONNoDescription] for an event whose description is null.
func ChainEventJSON(parent []byte, eventType string, data []byte, timestamp uint64, description string) []byte {
	return chainEventJSON(parent, eventType, data, timestamp, &description)
}

// ChainEventJSONNoDescription is like [ChainEventJSON] but encodes
// "description":null (Rust None).
func ChainEventJSONNoDescription(parent []byte, eventType string, data []byte, timestamp uint64) []byte {
	return chainEventJSON(parent, eventType, data, timestamp, nil)
}

func chainEventJSON(parent []byte, eventType string, data []byte, timestamp uint64, description *string) []byte {
	b := make([]byte, 0, 128+4*len(data)+4*len(parent))
	b = append(b, `{"hash":[],"parent_hash":`...)
	if parent == nil {
		b = append(b, "null"...)
	} else {
		b = appendByteArray(b, parent)
	}
	b = append(b, `,"event_type":`...)
	b = appendJSONString(b, eventType)
	b = append(b, `,"data":`...)
	b = appendByteArray(b, data)
	b = append(b, `,"timestamp":`...)
	b = strconv.AppendUint(b, timestamp, 10)
	b = append(b, `,"description":`...)
	if description == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, *description)
	}
	return append(b, '}')
}

// appendByteArray appends v as serde_json encodes a Vec<u8>: [1,2,3].
func appendByteArray(b, v []byte) []byte {
	b = append(b, '[')
	for i, x := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendUint(b, uint64(x), 10)
	}
	return append(b, ']')
}

// appendJSONString appends s quoted the way serde_json does: only '"', '\\'
// and control characters below 0x20 are escaped (\b \t \n \f \r short forms,
// others as \u00xx with lowercase hex); everything else, including '<', '>',
// '&', '/', U+2028 and non-ASCII, is written raw. Rust strings are always
// valid UTF-8, so s is expected to be valid UTF-8 as well.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b = append(b, '\\', '"')
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\b':
			b = append(b, '\\', 'b')
		case c == '\t':
			b = append(b, '\\', 't')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\f':
			b = append(b, '\\', 'f')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// WriteBlob stores content under dir/data the way Theater does and returns
// its hash. Like Theater, it does nothing if the blob file already exists
// (same name means same content); otherwise it creates dir/data (mode 0777
// before umask) and writes the file non-atomically: create/truncate, then
// write (mode 0666 before umask), as Rust's File::create + write_all does.
func WriteBlob(dir string, content []byte) (string, error) {
	hash := Sha1Hex(content)
	path := filepath.Join(dir, "data", hash)
	if _, err := os.Lstat(path); err == nil {
		return hash, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, content, 0o666); err != nil {
		return "", err
	}
	return hash, nil
}

// WriteLabel writes the label file dir/labels/<name> the way Theater does:
// parent directories are created as with create_dir_all (a '/' in name nests
// the label), and the file is overwritten non-atomically with refs joined by
// "\n" and no trailing newline. Names that are empty, absolute, or contain
// "." or ".." path elements are rejected so a fixture never escapes dir.
func WriteLabel(dir, name string, refs []string) error {
	if err := checkLabelName(name); err != nil {
		return err
	}
	path := filepath.Join(dir, "labels", filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(path), 0o777); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(strings.Join(refs, "\n")), 0o666)
}

func checkLabelName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") {
		return fmt.Errorf("theatertest: invalid label name %q", name)
	}
	for _, el := range strings.Split(name, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("theatertest: invalid label name %q", name)
		}
	}
	return nil
}

// NewActorID returns a canonical lowercase version-4 UUID
// (xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx) drawn from r, like the ids Theater
// gives actors; the same r state yields the same id.
func NewActorID(r *rand.Rand) string {
	var u [16]byte
	for i := range u {
		u[i] = byte(r.Intn(256))
	}
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	h := hex.EncodeToString(u[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Fixed label names that WriteStore always writes (besides per-actor labels
// and "plain/<k>" labels for even-indexed plain blobs).
const (
	LabelEmpty      = "empty"             // the empty blob (length 0)
	LabelNotes      = "notes"             // multi-ref label (3 refs)
	LabelTeamAlpha  = "team/alpha/notes"  // nested multi-ref label (2 refs)
	LabelTeamBeta   = "team/beta"         // nested single-ref label
	LabelWithColons = "release: v1 final" // ':' and spaces in the name
	LabelShared     = "shared:config"     // multi-ref label (4 refs) sharing blobs with others
)

// WriteStore writes a deterministic Theater-style store into dir (created if
// needed) and returns a Manifest of everything written. It generates:
//
//   - opts.Actors actors, each with a chain of opts.ChainLength events
//     (label "<id>:chain-head" -> newest event), an actor-state blob
//     (label "actor:<id>") and a state blob (label "<id>:state"); state
//     contents repeat across actors, so those blobs are deduplicated;
//   - the labeled empty blob ([LabelEmpty]);
//   - multi-ref labels with 2-4 refs, nested labels, and a label whose name
//     contains ':' and spaces (the Label* constants);
//   - opts.PlainBlobs random blobs; even-indexed ones are labeled
//     "plain/<k>", odd-indexed ones are unlabeled;
//   - two fixed unlabeled "orphan" blobs, so Manifest.Unreachable is never
//     empty.
//
// Writing the same content twice produces one data file.
func WriteStore(dir string, opts Options) (*Manifest, error) {
	if opts.Actors <= 0 {
		opts.Actors = DefaultActors
	}
	if opts.ChainLength <= 0 {
		opts.ChainLength = DefaultChainLength
	}
	if opts.PlainBlobs <= 0 {
		opts.PlainBlobs = DefaultPlainBlobs
	}
	r := rand.New(rand.NewSource(opts.Seed))
	w := &storeWriter{dir: dir, m: &Manifest{
		Blobs:  map[string][]byte{},
		Labels: map[string][]string{},
		Chains: map[string][]string{},
	}}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o777); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "labels"), 0o777); err != nil {
		return nil, err
	}

	// Actors and their chains.
	seen := map[string]bool{}
	for len(w.m.Actors) < opts.Actors {
		id := NewActorID(r)
		if seen[id] {
			continue
		}
		seen[id] = true
		w.m.Actors = append(w.m.Actors, id)
	}
	eventTypes := []string{"message", "state-change", "http-request", "wasm"}
	for i, id := range w.m.Actors {
		var parent []byte
		var chain []string
		for j := 0; j < opts.ChainLength; j++ {
			eventType := "init"
			if j > 0 {
				eventType = eventTypes[r.Intn(len(eventTypes))]
			}
			data := fmt.Appendf(nil, `{"actor":%q,"n":%d}`, id, j)
			ts := BaseTimestamp + uint64(i)*1000 + uint64(j)
			var ev []byte
			if i == 0 && j == 1 {
				ev = ChainEventJSONNoDescription(parent, eventType, data, ts)
			} else {
				ev = ChainEventJSON(parent, eventType, data, ts, fmt.Sprintf("event %d", j))
			}
			h, err := w.blob(ev)
			if err != nil {
				return nil, err
			}
			chain = append(chain, h)
			parent, _ = hex.DecodeString(h)
		}
		w.m.Chains[id] = chain
		if err := w.label(id+":chain-head", chain[len(chain)-1]); err != nil {
			return nil, err
		}
		actorState := fmt.Appendf(nil, `{"id":%q,"manifest":"actor-%d.toml","status":"running"}`, id, i%2)
		if err := w.blobLabel("actor:"+id, actorState); err != nil {
			return nil, err
		}
		// Shared between actors with the same parity: exercises dedup.
		state := fmt.Appendf(nil, `{"counter":%d}`, i%2)
		if err := w.blobLabel(id+":state", state); err != nil {
			return nil, err
		}
	}

	// Fixed fixtures.
	if err := w.blobLabel(LabelEmpty, nil); err != nil {
		return nil, err
	}
	fixed := map[string]string{}
	for _, s := range []string{"note one", "note two", "note three", "alpha 1", "alpha 2", "beta", "release notes\nv1\n", "config {\"a\":1}"} {
		h, err := w.blob([]byte(s))
		if err != nil {
			return nil, err
		}
		fixed[s] = h
	}
	if _, err := w.blob([]byte("note one")); err != nil { // duplicate write: no new file
		return nil, err
	}
	f := func(names ...string) []string {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = fixed[n]
		}
		return out
	}
	labels := []struct {
		name string
		refs []string
	}{
		{LabelNotes, f("note one", "note two", "note three")},
		{LabelTeamAlpha, f("alpha 1", "alpha 2")},
		{LabelTeamBeta, f("beta")},
		{LabelWithColons, f("release notes\nv1\n")},
		{LabelShared, append(f("config {\"a\":1}", "note one", "beta"), Sha1Hex(nil))},
	}
	for _, l := range labels {
		if err := w.label(l.name, l.refs...); err != nil {
			return nil, err
		}
	}

	// Random plain blobs, alternately labeled and unlabeled.
	unlabeled := map[string]bool{}
	for k := 0; k < opts.PlainBlobs; k++ {
		content := randomContent(r, k)
		h, err := w.blob(content)
		if err != nil {
			return nil, err
		}
		if k%2 == 0 {
			if err := w.label("plain/"+strconv.Itoa(k), h); err != nil {
				return nil, err
			}
		} else {
			unlabeled[h] = true
		}
	}
	for _, s := range []string{"orphan: nothing points here", "orphan\x00binary\xff"} {
		h, err := w.blob([]byte(s))
		if err != nil {
			return nil, err
		}
		unlabeled[h] = true
	}

	slices.Sort(w.m.Actors)
	w.m.Unreachable = unreachable(w.m)
	for h := range unlabeled {
		if !slices.Contains(w.m.Unreachable, h) {
			return nil, errors.New("theatertest: internal error: unlabeled blob " + h + " is reachable")
		}
	}
	return w.m, nil
}

// randomContent returns deterministic plain-blob content: a mix of text and
// binary blobs of varying size, each unique by its index prefix.
func randomContent(r *rand.Rand, k int) []byte {
	n := r.Intn(300)
	b := fmt.Appendf(nil, "plain blob %d\n", k)
	if k%3 == 2 {
		for range n {
			b = append(b, byte(r.Intn(256)))
		}
		return b
	}
	const letters = "abcdefghijklmnopqrstuvwxyz \n"
	for range n {
		b = append(b, letters[r.Intn(len(letters))])
	}
	return b
}

// unreachable returns, sorted, the blobs not reachable from any label via
// label refs and chain-event parent_hash links.
func unreachable(m *Manifest) []string {
	parentOf := map[string]string{}
	for _, chain := range m.Chains {
		for i := 1; i < len(chain); i++ {
			parentOf[chain[i]] = chain[i-1]
		}
	}
	reach := map[string]bool{}
	for _, refs := range m.Labels {
		for _, h := range refs {
			for h != "" && !reach[h] {
				reach[h] = true
				h = parentOf[h]
			}
		}
	}
	var out []string
	for h := range m.Blobs {
		if !reach[h] {
			out = append(out, h)
		}
	}
	slices.Sort(out)
	return out
}

type storeWriter struct {
	dir string
	m   *Manifest
}

func (w *storeWriter) blob(content []byte) (string, error) {
	h, err := WriteBlob(w.dir, content)
	if err != nil {
		return "", err
	}
	if _, ok := w.m.Blobs[h]; !ok {
		w.m.Blobs[h] = slices.Clone(content)
		if w.m.Blobs[h] == nil {
			w.m.Blobs[h] = []byte{}
		}
	}
	return h, nil
}

func (w *storeWriter) label(name string, refs ...string) error {
	if _, dup := w.m.Labels[name]; dup {
		return fmt.Errorf("theatertest: internal error: label %q written twice", name)
	}
	if err := WriteLabel(w.dir, name, refs); err != nil {
		return err
	}
	w.m.Labels[name] = slices.Clone(refs)
	return nil
}

func (w *storeWriter) blobLabel(name string, content []byte) error {
	h, err := w.blob(content)
	if err != nil {
		return err
	}
	return w.label(name, h)
}
