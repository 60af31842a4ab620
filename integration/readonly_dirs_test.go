package integration

import (
	"slices"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// refusedMessages are the errors a refused change may show: a change that
// is not allowed, not a missing feature ("Operation not supported") and
// never success.
var refusedMessages = []string{"Permission denied", "Read-only file system", "Operation not permitted"}

// shRefused runs a script that must fail with one of refusedMessages.
func shRefused(t *testing.T, dir, script string) {
	t.Helper()
	r := sh(t, dir, script)
	if r.code == 0 {
		t.Errorf("want the change refused, got success:\n%s", r)
		return
	}
	if !slices.ContainsFunc(refusedMessages, func(m string) bool { return strings.Contains(r.stderr, m) }) {
		t.Errorf("want the change refused with one of %q:\n%s", refusedMessages, r)
	}
}

// TestTopLevelRefusesChanges: the mount's top directories are fixed.
// rmdir, rm, mv, mkdir and creating files at the top must fail, and the
// three directories must stay, working.
func TestTopLevelRefusesChanges(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 13, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	before := withoutTmp(treeSnapshot(t, store))
	mnt := mountStore(t, store)

	for _, script := range []string{
		"rmdir by-hash",
		"rmdir actors",
		"rmdir by-label",
		"mv by-label labels",
		"mv actors by-label/actors",
		"mkdir extra",
		"touch extra",
		"echo x > extra",
		"ln -s by-hash extra",
	} {
		shRefused(t, mnt, script)
	}
	if got := lines(mustSh(t, mnt, "ls")); !slices.Equal(got, []string{"actors", "by-hash", "by-label"}) {
		t.Errorf("ls of the mount after refused changes = %q, want [actors by-hash by-label]", got)
	}
	if got := lines(mustSh(t, mnt, "ls by-hash")); len(got) != len(m.Blobs) {
		t.Errorf("ls by-hash lists %d blobs, want %d", len(got), len(m.Blobs))
	}
	if got := lines(mustSh(t, mnt, "ls actors")); !slices.Equal(got, m.Actors) {
		t.Errorf("ls actors = %q, want %q", got, m.Actors)
	}
	if got := catFile(t, mnt, "by-label/notes"); got != "note three" {
		t.Errorf("cat by-label/notes = %q", got)
	}
	checkStore(t, store)
	if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
		t.Errorf("refused changes changed the store: %s", d)
	}
}

// TestActorsReadOnly: actors/ shows labels read-only; every change there
// fails (removing a file must not report success and do nothing), and the
// store keeps its labels.
func TestActorsReadOnly(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 14, Actors: 1, ChainLength: 3, PlainBlobs: 2})
	before := withoutTmp(treeSnapshot(t, store))
	mnt := mountStore(t, store)
	id := m.Actors[0]
	a := "actors/" + id + "/"
	root := "000001-" + m.Chains[id][0]

	for _, script := range []string{
		"echo x > " + a + "chain-head",
		"echo x >> " + a + "state",
		"truncate -s 0 " + a + "actor",
		"rm " + a + "state",
		"rm -f " + a + "chain-head",
		"rm " + a + "chain/" + root,
		"rmdir " + a + "chain",
		"rmdir actors/" + id,
		"mv " + a + "state " + a + "state2",
		"mv " + a + "state by-label/moved",
		"mkdir " + a + "dir",
		"mkdir actors/" + strings.Replace(id, id[:8], "00000000", 1),
		"touch " + a + "new",
		"ln -s state " + a + "link",
	} {
		shRefused(t, mnt, script)
	}
	if got, want := lines(mustSh(t, mnt, "ls "+a)), []string{"actor", "chain", "chain-head", "state"}; !slices.Equal(got, want) {
		t.Errorf("ls %s after refused changes = %q, want %q", a, got, want)
	}
	if got := lines(mustSh(t, mnt, "ls "+a+"chain")); len(got) != 3 || got[0] != root {
		t.Errorf("ls %schain after refused changes = %q", a, got)
	}
	if got, want := catFile(t, mnt, a+"state"), string(m.Blobs[m.Labels[id+":state"][0]]); got != want {
		t.Errorf("cat %sstate = %q, want %q", a, got, want)
	}
	checkStore(t, store)
	if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
		t.Errorf("refused changes changed the store: %s", d)
	}
}
