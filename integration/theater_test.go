package integration

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// TestTheaterStore mounts a store written the way Theater writes it and
// reads all of it back through the mount: by-label, by-hash, actors, the
// extended attributes and stat; the store itself must be left as Theater
// wrote it.
func TestTheaterStore(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	dir, m := theaterStore(t, theatertest.Options{Seed: 7, Actors: 3, ChainLength: 5, PlainBlobs: 10})
	before := treeSnapshot(t, dir)
	mnt := mountStore(t, dir)

	// Sizes and modes first: a read would correct a wrong cached size.
	regular := func(size int, mode string) string {
		if size == 0 {
			return "0 " + mode + " regular empty file"
		}
		return fmt.Sprintf("%d %s regular file", size, mode)
	}
	for name, refs := range m.Labels {
		want := regular(len(m.Blobs[refs[len(refs)-1]]), "644")
		if got := statFile(t, mnt, "%s %a %F", "by-label/"+name); got != want {
			t.Errorf("stat by-label/%s = %q, want %q", name, got, want)
		}
	}
	for h, content := range m.Blobs {
		want := regular(len(content), "444")
		if got := statFile(t, mnt, "%s %a %F", "by-hash/"+h); got != want {
			t.Errorf("stat by-hash/%s = %q, want %q", h, got, want)
		}
	}
	if got := statFile(t, mnt, "%a %F", "by-label/team/alpha"); got != "755 directory" {
		t.Errorf("stat by-label/team/alpha = %q, want a directory, mode 755", got)
	}

	// by-label: the top level, and every label through the nested dirs.
	top := map[string]bool{}
	for name := range m.Labels {
		first, _, _ := strings.Cut(name, "/")
		top[first] = true
	}
	if got, want := lines(mustSh(t, mnt, "ls -1 by-label")), slices.Sorted(maps.Keys(top)); !slices.Equal(got, want) {
		t.Errorf("ls by-label:\n got %q\nwant %q", got, want)
	}
	if got, want := lines(mustSh(t, mnt, "cd by-label && find . -type f | sed 's|^\\./||' | sort")), slices.Sorted(maps.Keys(m.Labels)); !slices.Equal(got, want) {
		t.Errorf("find by-label -type f:\n got %q\nwant %q", got, want)
	}
	if got, want := lines(mustSh(t, mnt, "ls -1 by-label/team")), []string{"alpha", "beta"}; !slices.Equal(got, want) {
		t.Errorf("ls by-label/team = %q, want %q", got, want)
	}
	for name, refs := range m.Labels {
		if got, want := catFile(t, mnt, "by-label/"+name), string(m.Blobs[refs[len(refs)-1]]); got != want {
			t.Errorf("cat by-label/%s = %q, want the newest ref's content %q", name, abbrev([]byte(got)), abbrev([]byte(want)))
		}
	}

	// by-hash: every blob.
	if got, want := lines(mustSh(t, mnt, "ls -1 by-hash")), slices.Sorted(maps.Keys(m.Blobs)); !slices.Equal(got, want) {
		t.Errorf("ls by-hash:\n got %q\nwant %q", got, want)
	}
	for h, content := range m.Blobs {
		if got := catFile(t, mnt, "by-hash/"+h); got != string(content) {
			t.Errorf("cat by-hash/%s = %q, want %q", h, abbrev([]byte(got)), abbrev(content))
		}
	}

	// actors: ids, chain-head, chain/, state and actor.
	if got := lines(mustSh(t, mnt, "ls -1 actors")); !slices.Equal(got, m.Actors) {
		t.Errorf("ls actors = %q, want %q", got, m.Actors)
	}
	for _, id := range m.Actors {
		a := "actors/" + id + "/"
		if got, want := lines(mustSh(t, mnt, "ls -1 "+a)), []string{"actor", "chain", "chain-head", "state"}; !slices.Equal(got, want) {
			t.Errorf("ls %s = %q, want %q", a, got, want)
		}
		chain := m.Chains[id]
		head := m.Blobs[chain[len(chain)-1]]
		if got := statFile(t, mnt, "%s %a", a+"chain-head"); got != fmt.Sprintf("%d 444", len(head)) {
			t.Errorf("stat %schain-head = %q, want size %d, mode 444", a, got, len(head))
		}
		if got := catFile(t, mnt, a+"chain-head"); got != string(head) {
			t.Errorf("cat %schain-head = %q, want the head event %q", a, got, head)
		}
		var want []string
		for i, h := range chain {
			want = append(want, fmt.Sprintf("%06d-%s", i+1, h))
		}
		if got := lines(mustSh(t, mnt, "ls -1 "+a+"chain")); !slices.Equal(got, want) {
			t.Errorf("ls %schain:\n got %q\nwant %q", a, got, want)
		}
		for i, name := range want {
			if got := catFile(t, mnt, a+"chain/"+name); got != string(m.Blobs[chain[i]]) {
				t.Errorf("cat %schain/%s = %q, want %q", a, name, got, m.Blobs[chain[i]])
			}
		}
		if got, want := catFile(t, mnt, a+"state"), string(m.Blobs[m.Labels[id+":state"][0]]); got != want {
			t.Errorf("cat %sstate = %q, want %q", a, got, want)
		}
		if got, want := catFile(t, mnt, a+"actor"), string(m.Blobs[m.Labels["actor:"+id][0]]); got != want {
			t.Errorf("cat %sactor = %q, want the label actor:%s, %q", a, got, id, want)
		}
		if got := catFile(t, mnt, "by-label/"+id+":chain-head"); got != string(head) {
			t.Errorf("cat by-label/%s:chain-head = %q, want %q", id, got, head)
		}
	}

	// Extended attributes.
	getfattr := func(attr, p string) string {
		t.Helper()
		return mustSh(t, mnt, "getfattr --only-values -n "+attr+" "+q(p))
	}
	for _, name := range []string{theatertest.LabelNotes, theatertest.LabelTeamAlpha, theatertest.LabelWithColons, theatertest.LabelShared, theatertest.LabelEmpty} {
		refs := m.Labels[name]
		if got, want := getfattr("user.theater.hash", "by-label/"+name), refs[len(refs)-1]; got != want {
			t.Errorf("user.theater.hash of by-label/%s = %q, want %q", name, got, want)
		}
		if got, want := getfattr("user.theater.refs", "by-label/"+name), strings.Join(refs, "\n")+"\n"; got != want {
			t.Errorf("user.theater.refs of by-label/%s = %q, want %q", name, got, want)
		}
	}
	for h := range m.Blobs {
		if got := getfattr("user.theater.hash", "by-hash/"+h); got != h {
			t.Errorf("user.theater.hash of by-hash/%s = %q", h, got)
		}
	}
	id := m.Actors[0]
	if got, want := getfattr("user.theater.hash", "actors/"+id+"/chain-head"), m.Chains[id][len(m.Chains[id])-1]; got != want {
		t.Errorf("user.theater.hash of actors/%s/chain-head = %q, want %q", id, got, want)
	}
	if got, want := getfattr("user.theater.hash", "actors/"+id+"/chain/000001-"+m.Chains[id][0]), m.Chains[id][0]; got != want {
		t.Errorf("user.theater.hash of the chain root = %q, want %q", got, want)
	}
	if out := mustSh(t, mnt, "getfattr -d -m - by-label/notes"); !strings.Contains(out, "user.theater.refs=") || !strings.Contains(out, "user.theater.hash=") {
		t.Errorf("getfattr -d -m - by-label/notes lists %q, want user.theater.hash and user.theater.refs", out)
	}

	// Nothing read through the mount changes the store: data/ and labels/
	// as Theater wrote them; tmp/ is all we add.
	st := checkStore(t, dir)
	if d := diffTrees(before, withoutTmp(treeSnapshot(t, dir))); d != "" {
		t.Errorf("reading through the mount changed the store: %s", d)
	}
	if len(st.blobs) != len(m.Blobs) || len(st.labels) != len(m.Labels) {
		t.Errorf("store holds %d blobs, %d labels; Theater wrote %d, %d", len(st.blobs), len(st.labels), len(m.Blobs), len(m.Labels))
	}
	mustFsck(t, dir)
}

// withoutTmp drops tmp/ from a snapshot.
func withoutTmp(snap map[string]string) map[string]string {
	out := map[string]string{}
	for p, v := range snap {
		if p == "tmp" || strings.HasPrefix(p, "tmp/") {
			continue
		}
		out[p] = v
	}
	return out
}
