package fs

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
)

// chainNames is what actors/<id>/chain/ lists for events, root first.
func chainNames(events []string) []string {
	out := make([]string, len(events))
	for i, h := range events {
		out[i] = fmt.Sprintf("%06d-%s", i+1, h)
	}
	return out
}

func TestActors(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 1})
	m := mountDir(t, dir, MountOptions{})

	if got := dirNames(t, m.path("actors")); !slices.Equal(got, man.Actors) {
		t.Errorf("actors/ lists %q, want %q in that order", got, man.Actors)
	}
	for _, id := range man.Actors {
		chain := man.Chains[id]
		head := chain[len(chain)-1]
		adir := m.path("actors", id)

		if got, want := dirNames(t, adir), []string{"actor", "chain", "chain-head", "state"}; !slices.Equal(got, want) {
			t.Errorf("actors/%s/ lists %q, want %q", id, got, want)
		}
		if fi, err := os.Stat(adir); err != nil || !fi.IsDir() {
			t.Errorf("stat actors/%s: %v, %v", id, fi, err)
		}

		// chain/: root first, 000001 at the root.
		if got, want := dirNames(t, filepath.Join(adir, "chain")), chainNames(chain); !slices.Equal(got, want) {
			t.Errorf("actors/%s/chain/ lists %q, want %q", id, got, want)
		}
		for i, name := range chainNames(chain) {
			p := filepath.Join(adir, "chain", name)
			want := man.Blobs[chain[i]]
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatalf("stat %s: %v", name, err)
			}
			if fi.Size() != int64(len(want)) || fi.Mode().Perm() != 0o444 {
				t.Errorf("chain/%s: size %d mode %v; want %d and 0444", name, fi.Size(), fi.Mode(), len(want))
			}
			if got := readFile(t, p); got != string(want) {
				t.Errorf("chain/%s reads %q, want the event %q", name, clip(got), clip(string(want)))
			}
		}

		// chain-head is the head event as stored, read-only.
		p := filepath.Join(adir, "chain-head")
		wantSize(t, "chain-head", p, int64(len(man.Blobs[head])))
		if got := readFile(t, p); got != string(man.Blobs[head]) {
			t.Errorf("actors/%s/chain-head reads %q, want the head event %q", id, clip(got), clip(string(man.Blobs[head])))
		}
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o444 {
			t.Errorf("chain-head: %v, %v; want mode 0444", fi, err)
		}

		// state and actor: the labels <id>:state and actor:<id>.
		for name, label := range map[string]string{"state": id + ":state", "actor": "actor:" + id} {
			refs := man.Labels[label]
			want := string(man.Blobs[refs[len(refs)-1]])
			p := filepath.Join(adir, name)
			wantSize(t, name, p, int64(len(want)))
			if got := readFile(t, p); got != want {
				t.Errorf("actors/%s/%s reads %q, want %q", id, name, got, want)
			}
			if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o444 {
				t.Errorf("actors/%s/%s: %v, %v; want mode 0444", id, name, fi, err)
			}
		}
	}

	// chain/ names that are not <seq>-<hash> of this chain.
	id0, chain0 := man.Actors[0], man.Chains[man.Actors[0]]
	for _, name := range []string{
		"000002-" + chain0[0],                    // wrong seq
		"000001-" + chain0[0] + "x",              // not a hash
		"000001",                                 // no hash
		chain0[0],                                // no seq
		"000009-" + chain0[0],                    // past the head
		"000001-" + man.Chains[man.Actors[1]][0], // another actor's root
	} {
		if _, err := os.Stat(m.path("actors", id0, "chain", name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat chain/%s: %v, want ENOENT", name, err)
		}
	}

	// Labels without a UUID prefix are not actors.
	for _, name := range []string{"shared", "release", "notes", "plain"} {
		if _, err := os.Stat(m.path("actors", name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat actors/%s: %v, want ENOENT", name, err)
		}
	}
	if _, err := os.Stat(m.path("actors", actorB)); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of an actor with no labels: %v, want ENOENT", err)
	}
	if _, err := os.Stat(m.path("actors", man.Actors[0], "nothing")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat of an actor's missing file: %v, want ENOENT", err)
	}
	// The actor labels are in by-label/ as well.
	id := man.Actors[0]
	if got := readFile(t, m.label(id+":state")); got != readFile(t, m.path("actors", id, "state")) {
		t.Errorf("by-label/%s:state differs from actors/%s/state", id, id)
	}
}

// TestActorsReadOnly: nothing under actors/ changes through the mount.
func TestActorsReadOnly(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 2, Actors: 1})
	m := mountDir(t, dir, MountOptions{})
	id := man.Actors[0]
	chain := man.Chains[id]
	adir := m.path("actors", id)
	state := filepath.Join(adir, "state")
	head := filepath.Join(adir, "chain-head")
	event := filepath.Join(adir, "chain", chainNames(chain)[0])

	openErr := func(path string, flag int) func() error {
		return func() error {
			f, err := os.OpenFile(path, flag, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	// The label files refuse writes with EACCES, as the spec has for
	// by-hash/; the directories have no such operations at all, and
	// EACCES, EROFS or EPERM all tell a tool it cannot.
	for _, r := range []refusal{
		{"WriteFile(state)", func() error { return os.WriteFile(state, []byte("x"), 0o644) }},
		{"open state O_WRONLY", openErr(state, os.O_WRONLY)},
		{"open state O_RDWR", openErr(state, os.O_RDWR)},
		{"open state O_APPEND", openErr(state, os.O_WRONLY|os.O_APPEND)},
		{"WriteFile(chain-head)", func() error { return os.WriteFile(head, []byte("x"), 0o644) }},
		{"WriteFile(chain event)", func() error { return os.WriteFile(event, []byte("x"), 0o644) }},
		{"Truncate(state)", func() error { return os.Truncate(state, 0) }},
		{"Truncate(chain-head)", func() error { return os.Truncate(head, 0) }},
	} {
		wantErrno(t, r.name, r.do(), syscall.EACCES)
	}
	// What the directories do not implement must fail too: go-fuse
	// answers success to an unlink or rmdir the node does not implement
	// (and drops the entry), which tells rm the label is gone while it
	// stays. ENOTSUP, go-fuse's answer for rename and mkdir, is
	// accepted.
	for _, r := range []refusal{
		{"WriteFile(new file)", func() error { return os.WriteFile(filepath.Join(adir, "new"), []byte("x"), 0o644) }},
		{"Remove(state)", func() error { return syscall.Unlink(state) }},
		{"Remove(chain-head)", func() error { return syscall.Unlink(head) }},
		{"Remove(chain event)", func() error { return syscall.Unlink(event) }},
		{"Rmdir(chain)", func() error { return syscall.Rmdir(filepath.Join(adir, "chain")) }},
		{"Rmdir(actors/<id>)", func() error { return syscall.Rmdir(adir) }},
		{"Rename(state)", func() error { return os.Rename(state, filepath.Join(adir, "state2")) }},
		{"Mkdir", func() error { return os.Mkdir(filepath.Join(adir, "d"), 0o755) }},
		{"Mkdir actors/x", func() error { return os.Mkdir(m.path("actors", actorB), 0o755) }},
	} {
		wantErrno(t, r.name, r.do(), syscall.EACCES, syscall.EROFS, syscall.EPERM, syscall.ENOTSUP)
	}
	m.wantLabel(id+":state", string(man.Blobs[man.Labels[id+":state"][0]]))
	m.wantLabel(id+":chain-head", string(man.Blobs[chain[len(chain)-1]]))
	for _, p := range []string{state, head, event} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("after the attempts: %v", err)
		}
	}
}

// TestRootRefusesChanges: the top directories are fixed. Removing one
// must fail, and must not make it vanish from the mount.
func TestRootRefusesChanges(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.put("hello")
	for _, r := range []refusal{
		{"Rmdir(by-hash)", func() error { return syscall.Rmdir(m.path("by-hash")) }},
		{"Rmdir(by-label)", func() error { return syscall.Rmdir(m.path("by-label")) }},
		{"Rmdir(actors)", func() error { return syscall.Rmdir(m.path("actors")) }},
		{"Rename(by-hash)", func() error { return os.Rename(m.path("by-hash"), m.path("x")) }},
		{"Mkdir", func() error { return os.Mkdir(m.path("x"), 0o755) }},
		{"WriteFile", func() error { return os.WriteFile(m.path("x"), []byte("x"), 0o644) }},
	} {
		wantErrno(t, r.name, r.do(), syscall.EACCES, syscall.EROFS, syscall.EPERM, syscall.EBUSY, syscall.ENOTSUP)
	}
	for _, d := range []string{"by-hash", "by-label", "actors"} {
		if fi, err := os.Stat(m.path(d)); err != nil || !fi.IsDir() {
			t.Errorf("%s after the attempts: %v, %v", d, fi, err)
		}
	}
	if got := dirNames(t, m.mnt); !slices.Equal(sortedStrings(got), []string{".theater", "actors", "by-hash", "by-label"}) {
		t.Errorf("the mount's top lists %q after the attempts", got)
	}
	if _, err := os.ReadFile(m.blob(h)); err != nil {
		t.Errorf("reading a blob after the attempts: %v", err)
	}
}

// TestActorChainBroken: a chain whose middle event is missing from data/
// lists the events from the head back to the break, without an error,
// and the break is logged.
func TestActorChainBroken(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 3, Actors: 1, ChainLength: 5})
	id := man.Actors[0]
	chain := man.Chains[id]
	if err := os.Remove(filepath.Join(dir, store.DataDir, chain[2])); err != nil {
		t.Fatal(err)
	}
	m := mountDir(t, dir, MountOptions{})

	names := dirNames(t, m.path("actors", id, "chain"))
	var hashes []string
	lastSeq := 0
	for _, n := range names {
		seq, h, ok := strings.Cut(n, "-")
		var s int
		if _, err := fmt.Sscanf(seq, "%d", &s); !ok || err != nil || len(seq) < 6 {
			t.Errorf("chain entry %q is not <seq>-<hash>", n)
			continue
		}
		if s <= lastSeq {
			t.Errorf("chain entry %q: seq does not increase", n)
		}
		lastSeq = s
		hashes = append(hashes, h)
	}
	if want := chain[3:]; !slices.Equal(hashes, want) {
		t.Errorf("a chain broken at event 3 lists %q, want the events after the break %q", names, want)
	}
	for _, n := range names {
		if _, err := os.ReadFile(m.path("actors", id, "chain", n)); err != nil {
			t.Errorf("reading chain/%s: %v", n, err)
		}
	}
	if got := readFile(t, m.path("actors", id, "chain-head")); got != string(man.Blobs[chain[4]]) {
		t.Errorf("chain-head of a broken chain reads %q", clip(got))
	}
	if !strings.Contains(m.logs.String(), chain[2]) {
		t.Errorf("no log line names the missing event %s; log:\n%s", chain[2], m.logs)
	}

}

// TestActorChainHeadMissing: a chain-head pointing at an event missing
// from data/ lists an empty chain/, not an error, and the actor still
// lists.
func TestActorChainHeadMissing(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 6, Actors: 1, ChainLength: 3})
	id := man.Actors[0]
	chain := man.Chains[id]
	if err := os.Remove(filepath.Join(dir, store.DataDir, chain[2])); err != nil {
		t.Fatal(err)
	}
	m := mountDir(t, dir, MountOptions{})
	if got := dirNames(t, m.path("actors")); !slices.Equal(got, []string{id}) {
		t.Errorf("actors/ lists %q", got)
	}
	if got := dirNames(t, m.path("actors", id, "chain")); len(got) != 0 {
		t.Errorf("chain/ of an actor whose head event is missing lists %q, want nothing", got)
	}
	_, err := os.ReadFile(m.path("actors", id, "chain-head"))
	wantErrno(t, "reading a chain-head whose event is missing", err, syscall.EIO)
}

// TestActorChainFollowsHead: when the runtime appends an event and moves
// chain-head, chain/ and chain-head show it within a second.
func TestActorChainFollowsHead(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 4, Actors: 1, ChainLength: 3})
	id := man.Actors[0]
	chain := man.Chains[id]
	m := mountDir(t, dir, MountOptions{})
	headPath := m.path("actors", id, "chain-head")

	// Look at everything once, so the kernel and the nodes hold it.
	if got := dirNames(t, m.path("actors", id, "chain")); !slices.Equal(got, chainNames(chain)) {
		t.Fatalf("chain/ lists %q", got)
	}
	readFile(t, headPath)
	wantSize(t, "chain-head", headPath, int64(len(man.Blobs[chain[2]])))

	// The runtime appends an event the way Theater writes it.
	parent, _ := hex.DecodeString(chain[2])
	ev := theatertest.ChainEventJSON(parent, "message", []byte(`{"n":3,"more":"a longer event than before"}`), theatertest.BaseTimestamp+3, "event 3")
	h, err := theatertest.WriteBlob(dir, ev)
	if err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(dir, id+":chain-head", []string{h}); err != nil {
		t.Fatal(err)
	}
	newChain := append(slices.Clone(chain), h)

	if msg := eventually(time.Second+200*time.Millisecond, func() string {
		var st syscall.Stat_t
		if err := syscall.Stat(headPath, &st); err != nil {
			return err.Error()
		}
		if st.Size != int64(len(ev)) {
			return fmt.Sprintf("chain-head size %d, want %d", st.Size, len(ev))
		}
		return ""
	}); msg != "" {
		t.Errorf("after the head moved: %s", msg)
	}
	if msg := eventually(time.Second+200*time.Millisecond, func() string {
		b, err := os.ReadFile(headPath)
		if err != nil {
			return err.Error()
		}
		if string(b) != string(ev) {
			return fmt.Sprintf("chain-head reads %q", clip(string(b)))
		}
		return ""
	}); msg != "" {
		t.Errorf("after the head moved: %s", msg)
	}
	if msg := eventually(time.Second+200*time.Millisecond, func() string {
		f, err := os.Open(m.path("actors", id, "chain"))
		if err != nil {
			return err.Error()
		}
		defer f.Close()
		got, err := f.Readdirnames(-1)
		if err != nil {
			return err.Error()
		}
		if !slices.Equal(got, chainNames(newChain)) {
			return fmt.Sprintf("chain/ lists %q, want %q", got, chainNames(newChain))
		}
		return ""
	}); msg != "" {
		t.Errorf("after the head moved: %s", msg)
	}
	if got := readFile(t, m.path("actors", id, "chain", chainNames(newChain)[3])); got != string(ev) {
		t.Errorf("the new event reads %q", clip(got))
	}
}

// TestActorFileNames: actors/<id>/actor is the label actor:<id> unless a
// label <id>:actor exists; a label <id>:chain does not hide the chain/
// directory of an actor with a chain (by-label/ shows it), and what
// readdir says a name is, stat says too.
func TestActorFileNames(t *testing.T) {
	t.Parallel()
	dir, man := writeTheaterStore(t, theatertest.Options{Seed: 5, Actors: 1})
	id := man.Actors[0]
	m := mountDir(t, dir, MountOptions{})
	m.setLabel(id+":actor", "the <id>:actor label")
	m.setLabel(id+":chain", "a label named chain")
	m.setLabel(id+":notes", "notes")

	if msg := eventually(2*time.Second, func() string {
		b, err := os.ReadFile(m.path("actors", id, "actor"))
		if err != nil {
			return err.Error()
		}
		if string(b) != "the <id>:actor label" {
			return fmt.Sprintf("reads %q", b)
		}
		return ""
	}); msg != "" {
		t.Errorf("actors/%s/actor with both actor:%s and %s:actor: %s; want %s:actor's content", id, id, id, msg, id)
	}
	if got := readFile(t, m.path("actors", id, "notes")); got != "notes" {
		t.Errorf("actors/%s/notes reads %q", id, got)
	}

	ents, err := os.ReadDir(m.path("actors", id))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		fi, err := os.Lstat(m.path("actors", id, e.Name()))
		if err != nil {
			t.Errorf("%s is listed but stat says %v", e.Name(), err)
			continue
		}
		if fi.IsDir() != e.IsDir() {
			t.Errorf("actors/%s/%s: readdir says dir=%v, stat says dir=%v", id, e.Name(), e.IsDir(), fi.IsDir())
		}
	}
	if fi, err := os.Stat(m.path("actors", id, "chain")); err != nil || !fi.IsDir() {
		t.Errorf("actors/%s/chain with a label %s:chain: %v, %v; want the chain/ directory", id, id, fi, err)
	}
	if got := dirNames(t, m.path("actors", id, "chain")); !slices.Equal(got, chainNames(man.Chains[id])) {
		t.Errorf("actors/%s/chain/ lists %q, want the chain", id, got)
	}
	if got := readFile(t, m.label(id+":chain")); got != "a label named chain" {
		t.Errorf("by-label/%s:chain reads %q", id, got)
	}
}
