package integration

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// TestLabelMissingBlob: a label whose blob is missing (Theater writes
// non-atomically, a gc elsewhere, a damaged disk) reads as an I/O error,
// while listing by-label/ and reading other labels still work; fsck names
// it.
func TestLabelMissingBlob(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 5, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	ghost := sha1Hex([]byte("never stored"))
	if err := theatertest.WriteLabel(store, "ghost", []string{ghost}); err != nil {
		t.Fatal(err)
	}
	// A multi-ref label whose newest ref is missing reads as missing too.
	if err := theatertest.WriteLabel(store, "half/ghost", []string{m.Labels[theatertest.LabelTeamBeta][0], ghost}); err != nil {
		t.Fatal(err)
	}
	before := withoutTmp(treeSnapshot(t, store))
	mnt := newMountpoint(t)
	logFile := mountAt(t, store, mnt)

	shFails(t, mnt, "cat by-label/ghost", "Input/output error")
	wantLogLine(t, logFile, "ghost", ghost)
	shFails(t, mnt, "cat by-label/half/ghost", "Input/output error")
	shFails(t, mnt, "cp by-label/ghost /dev/null", "Input/output error")
	top := lines(mustSh(t, mnt, "ls by-label"))
	for _, want := range []string{"ghost", "half", "notes", "team"} {
		if !slices.Contains(top, want) {
			t.Errorf("ls by-label = %q, want %s listed", top, want)
		}
	}
	if got := lines(mustSh(t, mnt, "ls -l by-label/half | tail -n +2 | wc -l")); len(got) != 1 || strings.TrimSpace(got[0]) != "1" {
		t.Errorf("ls -l by-label/half lists %q entries, want 1", got)
	}
	if got := mustSh(t, mnt, "getfattr --only-values -n user.theater.hash by-label/ghost"); got != ghost {
		t.Errorf("user.theater.hash of by-label/ghost = %q, want %s", got, ghost)
	}
	if got := catFile(t, mnt, "by-label/notes"); got != "note three" {
		t.Errorf("cat by-label/notes = %q next to a broken label", got)
	}
	shFails(t, mnt, "cat by-hash/"+ghost, "No such file or directory")

	if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
		t.Errorf("reading a broken label changed the store: %s", d)
	}
	r := fsck(t, store)
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, "ghost") || !strings.Contains(r.stdout+r.stderr, ghost) {
		t.Errorf("fsck: want exit 1 naming the label ghost and blob %s:\n%s", ghost, r)
	}
}

// TestCorruptBlob: a blob whose content no longer hashes to its name (one
// byte flipped, size kept) is never served: reading it by hash or through
// its label is an I/O error; fsck names it. A blob verified by an earlier
// mount and corrupted since is caught too: the remembered verdict is for
// the file as it was.
func TestCorruptBlob(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 6, Actors: 1, ChainLength: 2, PlainBlobs: 4})
	label := "plain/2" // a labelled plain blob
	h := m.Labels[label][0]
	earlier := m.Labels["plain/0"][0]

	// An earlier mount reads (and so verifies) one of them.
	mnt := mountStore(t, store)
	if got := catFile(t, mnt, "by-hash/"+earlier); got != string(m.Blobs[earlier]) {
		t.Fatalf("cat by-hash/%s before the damage = %q", earlier, got)
	}
	if r := unmount(t, mnt); r.code != 0 {
		t.Fatalf("unmount:\n%s", r)
	}

	flip := func(h string) []byte {
		p := filepath.Join(store, "data", h)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[len(b)/2] ^= 0x20
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return b
	}
	b := flip(h)
	flip(earlier)
	p := filepath.Join(store, "data", h)
	mnt = newMountpoint(t)
	logFile := mountAt(t, store, mnt)

	// Its size is still the blob's: stat works.
	if got := statFile(t, mnt, "%s", "by-hash/"+h); got != strconv.Itoa(len(b)) {
		t.Errorf("stat by-hash/%s: size %s, want %d", h, got, len(b))
	}
	shFails(t, mnt, "cat by-hash/"+h, "Input/output error")
	wantLogLine(t, logFile, h)
	shFails(t, mnt, "cat by-hash/"+h, "Input/output error") // and again: the verdict stands
	shFails(t, mnt, "cat by-label/"+label, "Input/output error")
	shFails(t, mnt, "dd if=by-hash/"+h+" bs=1 count=1 status=none", "Input/output error")
	shFails(t, mnt, "cat by-hash/"+earlier, "Input/output error")
	shFails(t, mnt, "cat by-label/plain/0", "Input/output error")
	// Other blobs still read.
	other := m.Labels[theatertest.LabelTeamBeta][0]
	if got := catFile(t, mnt, "by-hash/"+other); got != "beta" {
		t.Errorf("cat by-hash/%s = %q next to a corrupt blob", other, got)
	}
	r := fsck(t, store)
	if r.code != 1 || !strings.Contains(r.stdout+r.stderr, h) || !strings.Contains(r.stdout+r.stderr, earlier) {
		t.Errorf("fsck: want exit 1 naming %s and %s:\n%s", h, earlier, r)
	}
	// Nothing repaired or removed behind the user's back, nothing stray.
	if got, _ := os.ReadFile(p); string(got) != string(b) {
		t.Errorf("data/%s changed", h)
	}
	st := readStore(t, store)
	if len(st.blobs) != len(m.Blobs) || len(st.labels) != len(m.Labels) {
		t.Errorf("the store holds %d blobs, %d labels; Theater wrote %d, %d", len(st.blobs), len(st.labels), len(m.Blobs), len(m.Labels))
	}
	if slices.ContainsFunc(st.tmp, func(n string) bool { return n != "verified" }) {
		t.Errorf("stray files in tmp/: %q", st.tmp)
	}
}
