package integration

import (
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// wantLabelContent checks a label from both sides: through the mount (stat
// first, as a read would correct a stale size; then cat and the hash
// attribute) and in the store (labels/<name> is the one ref of a blob with
// exactly that content).
func wantLabelContent(t *testing.T, mnt, store, name string, content []byte) storeState {
	t.Helper()
	p := "by-label/" + name
	if got, want := statFile(t, mnt, "%s %a", p), strconv.Itoa(len(content))+" 644"; got != want {
		t.Errorf("stat %s = %q, want size and mode %q", p, got, want)
	}
	if got := catFile(t, mnt, p); got != string(content) {
		t.Errorf("cat %s = %q, want %q", p, abbrev([]byte(got)), abbrev(content))
	}
	if got, want := mustSh(t, mnt, "getfattr --only-values -n user.theater.hash "+q(p)), sha1Hex(content); got != want {
		t.Errorf("user.theater.hash of %s = %q, want %q", p, got, want)
	}
	st := checkStore(t, store)
	st.wantLabel(t, name, content)
	return st
}

// TestWriteShellEdits edits one label with redirection, append, dd at an
// offset, truncate and sed -i; each leaves the label holding exactly the
// edited content as its one ref.
func TestWriteShellEdits(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	steps := []struct {
		script string
		want   string
	}{
		{"echo hi > by-label/x", "hi\n"},
		{"echo more >> by-label/x", "hi\nmore\n"},
		{"printf XY | dd of=by-label/x bs=1 seek=1 conv=notrunc status=none", "hXYmore\n"},
		{"printf '!' | dd of=by-label/x bs=1 seek=8 conv=notrunc status=none", "hXYmore\n!"},
		{"truncate -s 4 by-label/x", "hXYm"},
		{"truncate -s 6 by-label/x", "hXYm\x00\x00"},
		{"sed -i 's/X/Z/' by-label/x", "hZYm\x00\x00"},
		{"echo replaced > by-label/x", "replaced\n"},
		{"sed -i -e '1i first' -e 's/replaced/second/' by-label/x", "first\nsecond\n"},
		{"truncate -s 0 by-label/x", ""},
		{"echo again > by-label/x", "again\n"},
	}
	for _, s := range steps {
		mustSh(t, mnt, s.script)
		wantLabelContent(t, mnt, store, "x", []byte(s.want))
		if t.Failed() {
			t.Fatalf("after %q", s.script)
		}
	}
	if got := lines(mustSh(t, mnt, "ls -A by-label")); !slices.Equal(got, []string{"x"}) {
		t.Errorf("ls by-label = %q, want only x (no editor temp files left)", got)
	}
	st := checkStore(t, store)
	if got := st.labelNames(); !slices.Equal(got, []string{"x"}) {
		t.Errorf("labels in the store = %q, want only x", got)
	}
	mustFsck(t, store)
}

// TestWriteTouch: touch makes a new, empty label; on an existing label it
// changes nothing.
func TestWriteTouch(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "touch by-label/new")
	st := wantLabelContent(t, mnt, store, "new", nil)
	if got := st.labels["new"]; got != emptyHash {
		t.Errorf("labels/new = %q, want %s", got, emptyHash)
	}
	if got := statFile(t, mnt, "%F", "by-label/new"); got != "regular empty file" {
		t.Errorf("stat by-label/new: %q, want a regular empty file", got)
	}

	mustSh(t, mnt, "echo content > by-label/kept")
	before := readStore(t, store).labels["kept"]
	for _, script := range []string{
		"touch by-label/kept",
		"touch -m by-label/kept",
		"touch -d '2001-02-03 04:05:06' by-label/kept",
		"touch -c by-label/kept",
	} {
		mustSh(t, mnt, script)
		st := wantLabelContent(t, mnt, store, "kept", []byte("content\n"))
		if got := st.labels["kept"]; got != before {
			t.Errorf("%s: labels/kept went from %q to %q", script, before, got)
		}
	}
	if got := lines(mustSh(t, mnt, "ls by-label")); !slices.Equal(got, []string{"kept", "new"}) {
		t.Errorf("ls by-label = %q", got)
	}
	checkStore(t, store).wantLabels(t, "kept", "new")
	mustFsck(t, store)
}

// TestWriteCopyLarge copies 20 MiB of random data into a label and back.
func TestWriteCopyLarge(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	big := make([]byte, 20<<20)
	rand.Read(big)
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, big, 0o644); err != nil {
		t.Fatal(err)
	}
	mustSh(t, mnt, "cp "+q(src)+" by-label/big")
	if got := statFile(t, mnt, "%s", "by-label/big"); got != strconv.Itoa(len(big)) {
		t.Errorf("stat by-label/big: size %s, want %d", got, len(big))
	}
	mustSh(t, mnt, "cmp "+q(src)+" by-label/big")
	h := sha1Hex(big)
	mustSh(t, mnt, "cmp "+q(src)+" by-hash/"+h)
	if got := mustSh(t, mnt, "getfattr --only-values -n user.theater.hash by-label/big"); got != h {
		t.Errorf("user.theater.hash of by-label/big = %q, want %q", got, h)
	}
	out := filepath.Join(t.TempDir(), "out")
	mustSh(t, mnt, "cp by-label/big "+q(out)+" && cmp "+q(src)+" "+q(out))
	st := checkStore(t, store)
	st.wantLabel(t, "big", big)

	// cp over an existing label replaces it: one ref, the new content.
	small := filepath.Join(t.TempDir(), "small")
	os.WriteFile(small, []byte("small\n"), 0o644)
	mustSh(t, mnt, "cp "+q(small)+" by-label/big")
	wantLabelContent(t, mnt, store, "big", []byte("small\n")).wantLabels(t, "big")
	mustFsck(t, store)
}

// TestWriteRename: mv renames a label, replaces an existing one, moves
// labels between namespaces and renames a namespace.
func TestWriteRename(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo a > by-label/a && echo b > by-label/b && echo c > by-label/c")
	mustSh(t, mnt, "mv by-label/a by-label/a2")
	shFails(t, mnt, "cat by-label/a", "No such file or directory")
	st := wantLabelContent(t, mnt, store, "a2", []byte("a\n"))
	st.wantNoLabel(t, "a")

	// Over an existing label: b holds exactly a's content, one ref.
	mustSh(t, mnt, "mv by-label/a2 by-label/b")
	st = wantLabelContent(t, mnt, store, "b", []byte("a\n"))
	st.wantNoLabel(t, "a2")
	if got := lines(mustSh(t, mnt, "ls by-label")); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("ls by-label = %q, want [b c]", got)
	}

	// The editor pattern: write a temp name, rename it over the target.
	mustSh(t, mnt, "echo edited > by-label/.c.swp && mv -f by-label/.c.swp by-label/c")
	st = wantLabelContent(t, mnt, store, "c", []byte("edited\n"))
	st.wantNoLabel(t, ".c.swp")

	// Into a namespace, and the namespace itself.
	mustSh(t, mnt, "mkdir by-label/ns && mv by-label/c by-label/ns/c")
	wantLabelContent(t, mnt, store, "ns/c", []byte("edited\n"))
	mustSh(t, mnt, "mv by-label/ns by-label/ns2")
	st = wantLabelContent(t, mnt, store, "ns2/c", []byte("edited\n"))
	st.wantNoLabel(t, "ns/c")
	if slices.Contains(st.namespaces, "ns") {
		t.Errorf("labels/ns still there after mv ns ns2: %q", st.namespaces)
	}
	if got := lines(mustSh(t, mnt, "ls by-label/ns2")); !slices.Equal(got, []string{"c"}) {
		t.Errorf("ls by-label/ns2 = %q", got)
	}
	shFails(t, mnt, "ls by-label/ns", "No such file or directory")
	checkStore(t, store).wantLabels(t, "b", "ns2/c")
	mustFsck(t, store)
}

// TestWriteRemove: rm removes the label; the blob stays.
func TestWriteRemove(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo gone > by-label/x && echo stays > by-label/y")
	mustSh(t, mnt, "rm by-label/x")
	if got := lines(mustSh(t, mnt, "ls by-label")); !slices.Equal(got, []string{"y"}) {
		t.Errorf("ls by-label after rm = %q, want [y]", got)
	}
	shFails(t, mnt, "cat by-label/x", "No such file or directory")
	shFails(t, mnt, "rm by-label/x", "No such file or directory")
	st := checkStore(t, store)
	st.wantNoLabel(t, "x")
	st.wantLabel(t, "y", []byte("stays\n"))
	st.wantLabels(t, "y")
	if !bytes.Equal(st.blobs[sha1Hex([]byte("gone\n"))], []byte("gone\n")) {
		t.Errorf("rm removed the blob too; it must stay until gc")
	}
	if got := catFile(t, mnt, "by-hash/"+sha1Hex([]byte("gone\n"))); got != "gone\n" {
		t.Errorf("by-hash of the removed label's blob = %q", got)
	}
	mustFsck(t, store)
}

// TestWriteNamespaces: mkdir -p makes nested namespaces, labels go in
// them, rmdir refuses a namespace that is not empty and removes an empty
// one.
func TestWriteNamespaces(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "mkdir -p by-label/ns/sub")
	if got := statFile(t, mnt, "%F", "by-label/ns/sub"); got != "directory" {
		t.Errorf("by-label/ns/sub is a %q", got)
	}
	st := checkStore(t, store)
	if !slices.Equal(st.namespaces, []string{"ns", "ns/sub"}) {
		t.Errorf("namespaces in labels/ = %q, want [ns ns/sub]", st.namespaces)
	}
	mustSh(t, mnt, "echo f > by-label/ns/sub/f && echo g > 'by-label/ns/g: with colon'")
	wantLabelContent(t, mnt, store, "ns/sub/f", []byte("f\n"))
	wantLabelContent(t, mnt, store, "ns/g: with colon", []byte("g\n"))
	if got := lines(mustSh(t, mnt, "ls by-label/ns")); !slices.Equal(got, []string{"g: with colon", "sub"}) {
		t.Errorf("ls by-label/ns = %q", got)
	}

	shFails(t, mnt, "rmdir by-label/ns/sub", "Directory not empty")
	shFails(t, mnt, "rmdir by-label/ns", "Directory not empty")
	shFails(t, mnt, "rmdir by-label/ns/sub/f", "Not a directory")
	shFails(t, mnt, "echo x > by-label/ns", "Is a directory")
	wantLabelContent(t, mnt, store, "ns/sub/f", []byte("f\n"))

	// A label cannot nest under a label.
	shFails(t, mnt, "mkdir by-label/ns/sub/f/deeper", "Not a directory")

	// cp -a of a directory: the mount keeps no ACLs or xattrs, and says
	// so in a way cp passes over.
	src := t.TempDir()
	mustSh(t, src, "mkdir -p tree/d && echo a > tree/d/a && echo b > tree/b")
	mustSh(t, mnt, "cp -a "+src+"/tree by-label/ns/copied")
	wantLabelContent(t, mnt, store, "ns/copied/d/a", []byte("a\n"))
	wantLabelContent(t, mnt, store, "ns/copied/b", []byte("b\n"))
	mustSh(t, mnt, "rm -r by-label/ns/copied")

	mustSh(t, mnt, "rm by-label/ns/sub/f")
	if got := statFile(t, mnt, "%F", "by-label/ns/sub"); got != "directory" {
		t.Errorf("by-label/ns/sub after removing its label: %q, want it still a directory", got)
	}
	mustSh(t, mnt, "rmdir by-label/ns/sub")
	mustSh(t, mnt, "rm 'by-label/ns/g: with colon' && rmdir by-label/ns")
	if got := mustSh(t, mnt, "ls -A by-label"); got != "" {
		t.Errorf("ls by-label after rmdir = %q, want nothing", got)
	}
	st = checkStore(t, store)
	if len(st.namespaces) != 0 || len(st.labels) != 0 {
		t.Errorf("labels/ after rmdir holds namespaces %q, labels %q; want nothing", st.namespaces, st.labelNames())
	}
	mustFsck(t, store)
}

// TestWriteChmodAccepted: mode and owner changes are accepted and not
// stored, so tools that set them work.
func TestWriteChmodAccepted(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo keep > by-label/x && mkdir by-label/ns")
	before := readStore(t, store).labels["x"]
	mustSh(t, mnt, "chmod 600 by-label/x")
	mustSh(t, mnt, "chmod 700 by-label/ns")
	mustSh(t, mnt, "chown "+strconv.Itoa(os.Getuid())+":"+strconv.Itoa(os.Getgid())+" by-label/x")
	st := wantLabelContent(t, mnt, store, "x", []byte("keep\n")) // mode still 644
	if got := st.labels["x"]; got != before {
		t.Errorf("chmod changed labels/x from %q to %q", before, got)
	}
	if got := statFile(t, mnt, "%a", "by-label/ns"); got != "755" {
		t.Errorf("by-label/ns mode %s after chmod 700, want 755 (not stored)", got)
	}
	// cp -p sets mode and times on the copy: it must work.
	src := filepath.Join(t.TempDir(), "src")
	os.WriteFile(src, []byte("preserved\n"), 0o600)
	mustSh(t, mnt, "cp -p "+q(src)+" by-label/p")
	wantLabelContent(t, mnt, store, "p", []byte("preserved\n")).wantLabels(t, "x", "p")
	mustFsck(t, store)
}

// TestWriteEditor edits a label with vim, in place and with a backup
// renamed aside, as editors do.
func TestWriteEditor(t *testing.T) {
	requireFuse(t)
	if _, err := exec.LookPath("vim"); err != nil {
		t.Skip("vim is not installed")
	}
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo 'hello world' > by-label/x")
	mustSh(t, mnt, "vim -u NONE -N -Es -c '%s/world/vim/' -c wq by-label/x")
	wantLabelContent(t, mnt, store, "x", []byte("hello vim\n"))
	mustSh(t, mnt, "vim -u NONE -N -Es -c 'set nobackup writebackup backupcopy=no' -c '%s/vim/again/' -c wq by-label/x")
	wantLabelContent(t, mnt, store, "x", []byte("hello again\n")).wantLabels(t, "x")
	if got := lines(mustSh(t, mnt, "ls -A by-label")); !slices.Equal(got, []string{"x"}) {
		t.Errorf("ls by-label after vim = %q, want only x", got)
	}
	mustFsck(t, store)
}

// TestWriteRedirectCommitsOnlyFinalContent: replacing an existing label
// with `echo new > by-label/x` must not commit an empty version of it
// first. The shell opens the file with O_TRUNC, dup2s it onto stdout and
// closes the original descriptor before writing; that close is a FUSE flush
// with nothing written yet. Committing there replaces the label's content
// with nothing for a moment (a reader, such as the Theater runtime, reads it
// empty) and stores an empty blob that nobody wrote. dd does the same.
func TestWriteRedirectCommitsOnlyFinalContent(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	// Existing labels, written as Theater would: no empty blob anywhere.
	for name, content := range map[string]string{"x": "old\n", "y": "old y\n"} {
		h, err := theatertest.WriteBlob(store, []byte(content))
		if err != nil {
			t.Fatal(err)
		}
		if err := theatertest.WriteLabel(store, name, []string{h}); err != nil {
			t.Fatal(err)
		}
	}
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo new > by-label/x")
	mustSh(t, mnt, "printf fresh | dd of=by-label/y status=none")
	wantLabelContent(t, mnt, store, "x", []byte("new\n"))
	st := wantLabelContent(t, mnt, store, "y", []byte("fresh"))
	var got []string
	for h := range st.blobs {
		got = append(got, strconv.Quote(string(st.blobs[h])))
	}
	slices.Sort(got)
	want := []string{`"fresh"`, `"new\n"`, `"old y\n"`, `"old\n"`}
	if !slices.Equal(got, want) {
		t.Errorf("data/ holds the contents %s; want only what was written, %s (an empty blob means an empty version of an existing label was committed)",
			strings.Join(got, " "), strings.Join(want, " "))
	}
}

// TestNewLabelRedirectCommitsOnlyFinalContent is
// TestWriteRedirectCommitsOnlyFinalContent for a label that does not exist
// yet: `echo new > by-label/n` creates it, and the shell's dup2-and-close of
// the descriptor before echo writes must not publish it empty. Otherwise a
// reader (the Theater runtime) can find the new label holding nothing, a
// server killed in between leaves it so for good, and data/ gains an empty
// blob nobody wrote.
func TestNewLabelRedirectCommitsOnlyFinalContent(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo new > by-label/n")
	st := wantLabelContent(t, mnt, store, "n", []byte("new\n"))
	if _, ok := st.blobs[emptyHash]; ok {
		t.Errorf("data/ holds the empty blob after `echo new > by-label/n`: the new label was published empty before its content")
	}
}
