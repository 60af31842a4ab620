package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// hostile is a store holding, beside what Theater writes, everything a
// damaged or malicious store can hold, and markers that show up in any
// output that reads outside the store.
type hostile struct {
	store, outside string
	m              *theatertest.Manifest
	markers        []string // content from outside the store: never printed by anything
	followed       string   // a blob only a followed symlink in labels/ leads to

	badLabels  []string // label files whose content is not a list of blobs
	linkLabels []string // labels/ entries that are symlinks or FIFOs
	strays     []string // data/ entries that are not blobs
	ghostRefs  []string // labels naming a "blob" that is a symlink, directory or FIFO
	forged     []string // event blobs not hashing to their name, vouched for by a forged tmp/verified
	actors     map[string]string
	good       int64 // total size of the real blobs
}

// passwdMarker is the first line of every /etc/passwd.
const passwdMarker = "root:x:0:0:"

func hexName(s string) string { return sha1Hex([]byte(s)) }

// hostileStore writes the hostile store.
func hostileStore(t *testing.T) *hostile {
	t.Helper()
	store, m := theaterStore(t, theatertest.Options{Seed: 22, Actors: 2, ChainLength: 3, PlainBlobs: 4})
	var rnd [8]byte
	rand.Read(rnd[:])
	tag := hex.EncodeToString(rnd[:])
	h := &hostile{store: store, outside: t.TempDir(), m: m, actors: map[string]string{}}
	h.markers = []string{passwdMarker, "OUTSIDE-SECRET-" + tag, "OUTSIDE-ENTRY-" + tag}
	data := func(name string) string { return filepath.Join(store, "data", name) }
	label := func(name string) string { return filepath.Join(store, "labels", name) }
	write := func(p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	symlink := func(target, p string) {
		t.Helper()
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
	}
	fifo := func(p string) {
		t.Helper()
		if err := syscall.Mkfifo(p, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	var err error
	// Outside the store: a secret file, a directory, and a file holding
	// the hash of a store blob that nothing but a followed symlink reaches.
	secret := []byte(h.markers[1] + "\n")
	write(filepath.Join(h.outside, "secret.txt"), secret)
	write(filepath.Join(h.outside, "dir", h.markers[2]), secret)
	followed := []byte("reached through a symlink out of labels/ " + tag)
	if h.followed, err = theatertest.WriteBlob(store, followed); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(h.outside, "dir", h.followed), followed)
	write(filepath.Join(h.outside, "hashfile"), []byte(h.followed))
	for _, b := range m.Blobs {
		h.good += int64(len(b))
	}
	h.good += int64(len(followed))

	// labels/: garbage, paths, a huge file, symlinks out, a FIFO.
	garbage := make([]byte, 4096)
	rand.Read(garbage)
	good := m.Labels[theatertest.LabelTeamBeta][0]
	for name, b := range map[string][]byte{
		"hostile/garbage": garbage,
		"hostile/path":    []byte("/etc/passwd"),
		"hostile/dotdot":  []byte("../../etc/passwd"),
		"hostile/outside": []byte(filepath.Join(h.outside, "secret.txt")),
		"hostile/huge":    []byte(strings.Repeat(good+"\n", 17<<20/41+1)), // over 16 MiB
	} {
		write(label(name), b)
		h.badLabels = append(h.badLabels, name)
	}
	symlink("/etc/passwd", label("hostile/link-passwd"))
	symlink(filepath.Join(h.outside, "hashfile"), label("hostile/link-hashfile"))
	symlink(filepath.Join(h.outside, "dir"), label("hostile/link-dir"))
	symlink("../../../../../../../../../../etc", label("hostile/link-up"))
	fifo(label("hostile/fifo"))
	h.linkLabels = []string{"hostile/link-passwd", "hostile/link-hashfile", "hostile/link-dir", "hostile/link-up", "hostile/fifo"}

	// data/: symlinks out named by the hash of what they point to, a
	// directory and a FIFO named like blobs, names that are not hashes.
	passwd, err := os.ReadFile("/etc/passwd")
	if err != nil {
		t.Fatal(err)
	}
	symPasswd, symSecret, symDir := sha1Hex(passwd), sha1Hex(secret), hexName("dir")
	symlink("/etc/passwd", data(symPasswd))
	symlink(filepath.Join(h.outside, "secret.txt"), data(symSecret))
	symlink(filepath.Join(h.outside, "dir"), data(symDir))
	dirBlob, fifoBlob := hexName("a directory"), hexName("a fifo")
	write(filepath.Join(data(dirBlob), "inside"), secret)
	fifo(data(fifoBlob))
	write(data("not-a-hash"), []byte("not a blob"))
	write(data(strings.ToUpper(hexName("upper"))), []byte("upper"))
	write(data(".hidden"), []byte("hidden"))
	write(data(hexName("long")+"0"), []byte("long"))
	h.strays = []string{symPasswd, symSecret, symDir, dirBlob, fifoBlob, "not-a-hash", strings.ToUpper(hexName("upper")), ".hidden", hexName("long") + "0"}
	for name, ref := range map[string]string{
		"hostile/sym-passwd": symPasswd, "hostile/sym-secret": symSecret, "hostile/sym-dir": symDir,
		"hostile/dir-blob": dirBlob, "hostile/fifo-blob": fifoBlob,
	} {
		write(label(name), []byte(ref))
		h.ghostRefs = append(h.ghostRefs, name)
	}

	// Actors: a two-event cycle and an event that is its own parent (only
	// possible under names that are not the events' hashes, so a forged
	// tmp/verified vouches for them, or the walk would stop at the first),
	// a chain head that is not JSON, one with a 19-byte parent, one nested
	// beyond any parser's depth, one with two refs.
	var r [16]byte
	newID := func() string {
		rand.Read(r[:])
		s := hex.EncodeToString(r[:])
		return s[0:8] + "-" + s[8:12] + "-4" + s[13:16] + "-8" + s[17:20] + "-" + s[20:32]
	}
	raw := func(s string) []byte { b, _ := hex.DecodeString(s); return b }
	var verified []string
	forge := func(name string, b []byte) {
		t.Helper()
		write(data(name), b)
		fi, err := os.Stat(data(name))
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		verified = append(verified, fmt.Sprintf("%s %d %d %d %d 1\n", name, st.Ino, fi.Size(), fi.ModTime().UnixNano(), st.Ctim.Nano()))
		h.forged = append(h.forged, name)
	}
	c1, c2, self := hexName("cycle 1"), hexName("cycle 2"), hexName("self")
	forge(c1, theatertest.ChainEventJSON(raw(c2), "message", []byte("one"), theatertest.BaseTimestamp+1, "cycle one"))
	forge(c2, theatertest.ChainEventJSON(raw(c1), "message", []byte("two"), theatertest.BaseTimestamp+2, "cycle two"))
	forge(self, theatertest.ChainEventJSON(raw(self), "message", []byte("self"), theatertest.BaseTimestamp+3, "its own parent"))
	write(filepath.Join(store, "tmp", "verified"), []byte(strings.Join(verified, "")))
	heads := map[string][]byte{
		"not-json":  []byte("{this is not json"),
		"short":     theatertest.ChainEventJSON(make([]byte, 19), "message", nil, theatertest.BaseTimestamp, "19-byte parent"),
		"nested":    []byte(`{"hash":[],"parent_hash":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`),
		"not-bytes": []byte(`{"hash":[],"parent_hash":[1000,-1,3],"event_type":"x","data":[],"timestamp":1,"description":null}`),
	}
	for kind, refs := range map[string][]string{"cycle": {c1}, "self": {self}, "two-refs": {c1, self}} {
		id := newID()
		h.actors[kind] = id
		write(label(id+":chain-head"), []byte(strings.Join(refs, "\n")))
	}
	for kind, b := range heads {
		hash, err := theatertest.WriteBlob(store, b)
		if err != nil {
			t.Fatal(err)
		}
		h.good += int64(len(b))
		id := newID()
		h.actors[kind] = id
		write(label(id+":chain-head"), []byte(hash))
	}
	return h
}

// wantNoLeak checks that out shows nothing from outside the store.
func (h *hostile) wantNoLeak(t *testing.T, what, out string) {
	t.Helper()
	for _, m := range h.markers {
		if strings.Contains(out, m) {
			t.Errorf("%s printed %q, from outside the store:\n%s", what, m, abbrev([]byte(out)))
		}
	}
}

// TestHostileStoreContent: a store holding garbage, paths and a huge file
// as labels, symlinks out of the store in data/ and labels/, FIFOs,
// directories and names that are not hashes in data/, chains with cycles
// and heads that are not events. The mount (ls, cat, getfattr of every
// file, reads of every good label) and every command (labels, ls, du,
// fsck, gc --dry-run, chain, refs, get) keep working, never hang and never
// print anything from outside the store; fsck exits 1 naming every label
// and chain event at fault; writes through the mount never go outside.
func TestHostileStoreContent(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	h := hostileStore(t)
	outsideBefore := treeSnapshot(t, h.outside)
	mnt := mountStore(t, h.store)

	// The whole mount: every listing, every file read, every attribute.
	script := `ls -laR . 2>&1; find . -type f 2>/dev/null | sort | while IFS= read -r f; do cat "$f"; getfattr -d -m - "$f"; done 2>&1; true`
	r := sh(t, mnt, script)
	h.wantNoLeak(t, "reading the whole mount", r.stdout+r.stderr)
	if !strings.Contains(r.stdout, "team") || !strings.Contains(r.stdout, "chain-head") {
		t.Errorf("ls -laR of the hostile store's mount misses the good labels:\n%s", abbrev([]byte(r.stdout)))
	}
	// Each hostile name, asked for directly.
	var names []string
	for _, n := range slices.Concat(h.badLabels, h.linkLabels, h.ghostRefs) {
		names = append(names, "by-label/"+n, "by-label/"+n+"/x")
	}
	for _, n := range h.strays {
		names = append(names, "by-hash/"+n)
	}
	for _, p := range names {
		r := sh(t, mnt, "cat "+q(p)+"; ls -la "+q(p)+"; getfattr -d -m - "+q(p)+"; true")
		h.wantNoLeak(t, "cat "+p, r.stdout+r.stderr)
		if strings.Contains(r.stdout, h.followed) || strings.Contains(r.stdout, "through a symlink") {
			t.Errorf("%s: followed a symlink out of labels/:\n%s", p, r)
		}
	}
	// The good labels read as Theater wrote them.
	for name, refs := range h.m.Labels {
		if got, want := catFile(t, mnt, "by-label/"+name), string(h.m.Blobs[refs[len(refs)-1]]); got != want {
			t.Errorf("cat by-label/%s = %q, want %q", name, abbrev([]byte(got)), abbrev([]byte(want)))
		}
	}
	// Chains end, whatever they hold; the good ones are whole.
	for kind, id := range h.actors {
		r := sh(t, mnt, "ls actors/"+id+"/chain 2>&1; cat actors/"+id+"/chain/* 2>&1; true")
		h.wantNoLeak(t, "the chain of the "+kind+" actor", r.stdout)
	}
	for _, id := range h.m.Actors {
		if got := lines(mustSh(t, mnt, "ls actors/"+id+"/chain")); len(got) != len(h.m.Chains[id]) {
			t.Errorf("ls actors/%s/chain = %q, want %d events", id, got, len(h.m.Chains[id]))
		}
	}
	for _, s := range h.strays {
		if slices.Contains(lines(mustSh(t, mnt, "ls by-hash")), s) {
			t.Errorf("ls by-hash lists %s, which is not a blob", s)
		}
	}

	// Writes aimed through the symlinks stay in the store, or fail.
	for _, script := range []string{
		"echo x > by-label/hostile/link-hashfile",
		"echo x > by-label/hostile/link-dir/new",
		"echo x > by-label/hostile/link-up/theater-storefs-test",
		"mkdir by-label/hostile/link-dir/ns",
		"rm by-label/hostile/link-dir/" + h.markers[2],
		"mv by-label/team/beta by-label/hostile/link-dir/beta",
	} {
		sh(t, mnt, script)
	}
	if _, err := os.Lstat("/etc/theater-storefs-test"); err == nil {
		os.Remove("/etc/theater-storefs-test")
		t.Errorf("a write through by-label/hostile/link-up created /etc/theater-storefs-test")
	}
	if d := diffTrees(outsideBefore, treeSnapshot(t, h.outside)); d != "" {
		t.Errorf("writes through the mount changed files outside the store: %s", d)
	}

	// Every command.
	type want struct {
		args []string
		code int // -1: 0 or 1, with one line on stderr
	}
	cmds := []want{
		{[]string{"labels"}, 0}, {[]string{"labels", "--json"}, 0},
		{[]string{"ls"}, 0}, {[]string{"ls", "--json"}, 0},
		{[]string{"du"}, 0}, {[]string{"du", "--json"}, 0},
		{[]string{"fsck"}, 1}, {[]string{"fsck", "--json"}, 1},
		{[]string{"gc", "--dry-run"}, -1}, {[]string{"gc", "--dry-run", "--grace", "0"}, -1},
	}
	for kind, id := range h.actors {
		code := 1
		if kind == "two-refs" {
			code = -1
		}
		cmds = append(cmds, want{[]string{"chain", id}, code})
	}
	for _, id := range h.m.Actors {
		cmds = append(cmds, want{[]string{"chain", id}, 0})
	}
	for _, n := range slices.Concat(h.badLabels, h.linkLabels, h.ghostRefs) {
		cmds = append(cmds, want{[]string{"refs", n}, -1}, want{[]string{"get", "store:" + n}, -1})
	}
	for _, n := range h.strays {
		if hashRE.MatchString(n) {
			cmds = append(cmds, want{[]string{"get", n}, 1})
		}
	}
	out := map[string]result{}
	for _, c := range cmds {
		r := cli(t, append([]string{"--store", h.store}, c.args...)...)
		out[strings.Join(c.args, " ")] = r
		h.wantNoLeak(t, r.cmd, r.stdout+r.stderr)
		if c.args[0] != "ls" && c.args[0] != "gc" && (strings.Contains(r.stdout, h.followed) || strings.Contains(r.stdout, "through a symlink")) {
			t.Errorf("followed a symlink out of labels/:\n%s", abbrevResult(r))
		}
		switch {
		case c.code >= 0 && r.code != c.code:
			t.Errorf("want exit %d:\n%s", c.code, abbrevResult(r))
		case r.code != 0 && c.args[0] != "fsck" && strings.Count(r.stderr, "\n") != 1: // fsck adds a summary
			t.Errorf("want one line on stderr:\n%s", abbrevResult(r))
		case r.code != 0 && r.code != 1:
			t.Errorf("want exit 0 or 1:\n%s", abbrevResult(r))
		}
	}
	for name := range h.m.Labels {
		if !slices.Contains(lines(out["labels"].stdout), name) {
			t.Errorf("labels does not list %s:\n%s", name, abbrevResult(out["labels"]))
		}
	}
	for _, line := range lines(out["ls"].stdout) {
		hash, _, _ := strings.Cut(line, " ")
		if slices.Contains(h.strays, hash) {
			t.Errorf("ls lists %q, which is not a blob", line)
		}
	}
	if f := strings.Fields(out["du"].stdout); len(f) == 0 || f[0] != strconv.FormatInt(h.good+sizeOf(t, h.store, h.forged), 10) {
		t.Errorf("du = %q, want %d bytes: the blobs, and nothing symlinks point to", out["du"].stdout, h.good+sizeOf(t, h.store, h.forged))
	}
	rep := out["fsck"].stdout
	for _, n := range slices.Concat(h.badLabels, h.ghostRefs, h.forged) {
		if !strings.Contains(rep, n) {
			t.Errorf("fsck does not name %s:\n%s", n, abbrevResult(out["fsck"]))
		}
	}
	t.Logf("hostile store: %d bad label files, %d symlinked/FIFO labels, %d non-blobs in data/, %d labels naming them, %d forged events, %d broken chains: mount and %d commands kept working, nothing from outside printed; fsck exit %d with %d problems",
		len(h.badLabels), len(h.linkLabels), len(h.strays), len(h.ghostRefs), len(h.forged), len(h.actors), len(cmds), out["fsck"].code, len(lines(rep)))
}

func sizeOf(t *testing.T, store string, blobs []string) (n int64) {
	t.Helper()
	for _, b := range blobs {
		fi, err := os.Stat(filepath.Join(store, "data", b))
		if err != nil {
			t.Fatal(err)
		}
		n += fi.Size()
	}
	return n
}

// TestFsckReportsStrays: fsck is the tool that says whether a store is
// sound, so it names what in data/ is not a blob (symlinks, out of the
// store or not; directories and FIFOs named like blobs; names that are not
// hashes) and what in labels/ is not a label file (symlinks, FIFOs).
// Theater follows a symlink in data/ as if it were the blob.
func TestFsckReportsStrays(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	h := hostileStore(t)
	rep, r := fsckJSON(t, h.store)
	if r.code != 1 {
		t.Errorf("fsck: want exit 1:\n%s", abbrevResult(r))
	}
	var named []string
	for _, p := range rep.Problems {
		named = append(named, p.Name)
	}
	var missed []string
	for _, n := range slices.Concat(h.strays, h.linkLabels) {
		// By its name, or its path in the store (data/N, labels/N).
		if !slices.ContainsFunc(named, func(p string) bool { return p == n || strings.HasSuffix(p, "/"+n) }) {
			missed = append(missed, n)
		}
	}
	if len(missed) > 0 {
		t.Errorf("fsck names none of these %d entries, which are not blobs in data/ or label files in labels/: %q (fsck named only %q)", len(missed), missed, named)
	}
	h.wantNoLeak(t, "fsck", r.stdout+r.stderr)
}

// TestHostileTmpSymlink: a store whose tmp/ is a symlink out of the store
// (tmp/ is ours, but a store copied from elsewhere holds whatever it was
// given). Opening it, for a mount or any command, must not list, create,
// append to or remove files outside the store through it: not the spool
// leftovers that Open clears, not tmp/verified.
func TestHostileTmpSymlink(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, _ := theaterStore(t, theatertest.Options{Seed: 23, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	outside := t.TempDir()
	for _, name := range []string{"spool-precious", "label-precious"} {
		if err := os.WriteFile(filepath.Join(outside, name), []byte("someone's file"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(store, "tmp")); err != nil {
		t.Fatal(err)
	}
	before := treeSnapshot(t, outside)
	for _, args := range [][]string{{"labels"}, {"fsck"}, {"ls"}} {
		cli(t, append([]string{"--store", store}, args...)...)
	}
	mnt := newMountpoint(t)
	if r := cli(t, "--store", store, "mount", mnt); r.code == 0 {
		t.Cleanup(func() { cleanupMount(t, mnt) })
		sh(t, mnt, "cat by-label/notes by-hash/* >/dev/null; echo x > by-label/new; true")
		unmount(t, mnt)
	}
	if d := diffTrees(before, treeSnapshot(t, outside)); d != "" {
		t.Errorf("opening a store whose tmp/ is a symlink changed files outside the store: %s", d)
	}
}
