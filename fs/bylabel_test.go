package fs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
	"golang.org/x/sys/unix"
)

// wantSize fails unless stat(2) of path (and nothing else: no read, which
// would correct a stale size in the kernel) gives size.
func wantSize(t *testing.T, what, path string, size int64) {
	t.Helper()
	if st := stat(t, path); st.Size != size {
		t.Errorf("%s: stat %s: size %d, want %d", what, filepath.Base(path), st.Size, size)
	}
}

func TestLabelCreate(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	for _, name := range []string{"x", "a:b c", actorA + ":note", "line\nbreak", "ünïcødé", strings.Repeat("n", 255)} {
		content := "content of " + name
		writeFile(t, m.label(name), content)
		m.wantLabel(name, content)
		wantSize(t, "new label "+name, m.label(name), int64(len(content)))
		fi, err := os.Stat(m.label(name))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o644 {
			t.Errorf("label %q: mode %v, want a regular file with mode 0644", name, fi.Mode())
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
			t.Errorf("label %q: owner %d:%d, want %d:%d", name, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		if got := readFile(t, m.label(name)); got != content {
			t.Errorf("label %q reads %q, want %q", name, got, content)
		}
		// The blob is in by-hash/ too.
		if got := readFile(t, m.blob(shaStr(content))); got != content {
			t.Errorf("by-hash/ of label %q reads %q", name, got)
		}
	}

	// A label's mtime is its label file's (once the kernel's view of the
	// new file made by create has been refreshed).
	lfi, err := os.Stat(filepath.Join(m.dir, store.LabelsDir, "x"))
	if err != nil {
		t.Fatal(err)
	}
	if msg := eventually(time.Second, func() string {
		fi, err := os.Stat(m.label("x"))
		if err != nil {
			return err.Error()
		}
		if !fi.ModTime().Equal(lfi.ModTime()) {
			return fmt.Sprintf("mtime %v, want the label file's %v", fi.ModTime(), lfi.ModTime())
		}
		return ""
	}); msg != "" {
		t.Errorf("label x: %s", msg)
	}

	// touch: an empty label.
	f, err := os.OpenFile(m.label("empty"), os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("closing a new empty label: %v", err)
	}
	// Nothing was written: the empty label is committed on release, which
	// the kernel sends after close returns.
	m.waitLabel("empty", "")
	m.wantLabel("empty", "")
	wantSize(t, "touched label", m.label("empty"), 0)

	// O_EXCL on an existing label.
	_, err = os.OpenFile(m.label("x"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	wantErrno(t, "O_EXCL on an existing label", err, syscall.EEXIST)
	m.wantLabel("x", "content of x")

	// Labels the store did not hold before are all listed.
	want := []string{"a:b c", actorA + ":note", "empty", "line\nbreak", strings.Repeat("n", 255), "x", "ünïcødé"}
	if got := dirNames(t, m.path("by-label")); !slices.Equal(got, sortedStrings(want)) {
		t.Errorf("by-label/ lists %q, want %q", got, sortedStrings(want))
	}
}

// TestLabelTouchExisting: touch on an existing label changes nothing.
func TestLabelTouchExisting(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "keep me")
	f, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := os.Chtimes(m.label("x"), now, now); err != nil {
		t.Errorf("Chtimes on a label: %v, want it accepted", err)
	}
	m.wantLabel("x", "keep me")
}

// TestLabelMetadataAccepted: chmod, chown and utimes are accepted (so cp
// -p, rsync -a and sed -i work) and not stored.
func TestLabelMetadataAccepted(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "hello")
	if err := os.Mkdir(m.label("ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := m.label("x")
	if err := os.Chmod(p, 0o600); err != nil {
		t.Errorf("Chmod: %v", err)
	}
	if err := os.Chown(p, os.Getuid(), os.Getgid()); err != nil {
		t.Errorf("Chown: %v", err)
	}
	if err := os.Chtimes(p, time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		t.Errorf("Chtimes: %v", err)
	}
	if err := os.Chmod(m.label("ns"), 0o700); err != nil {
		t.Errorf("Chmod of a namespace: %v", err)
	}
	if err := os.Chtimes(m.label("ns"), time.Unix(1e9, 0), time.Unix(1e9, 0)); err != nil {
		t.Errorf("Chtimes of a namespace: %v", err)
	}
	m.wantLabel("x", "hello")
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o644 || fi.Size() != 5 {
		t.Errorf("after chmod, chown, utimes: %v, %v; want mode 0644, size 5", fi, err)
	}
}

func TestLabelTruncRewrite(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "hello world")
	old := shaStr("hello world")

	// Opening with O_TRUNC does not commit an empty label on the way.
	f, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "hello world")
	if _, err := f.WriteString("hi"); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "hello world") // not yet: on close
	if err := f.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	m.wantLabel("x", "hi")
	wantSize(t, "after a shorter rewrite", m.label("x"), 2)
	if got := readFile(t, m.label("x")); got != "hi" {
		t.Errorf("reads %q, want %q", got, "hi")
	}
	// The old blob stays until gc.
	if ok, err := m.st.Exists(bg, old); !ok || err != nil {
		t.Errorf("old blob gone after a rewrite: %v, %v", ok, err)
	}

	// A rewrite replaces a multi-ref label with exactly one ref.
	for _, c := range []string{"one", "two", "three"} {
		if _, err := m.st.PutAtLabel(bg, "multi", []byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, m.label("multi"), "replaced")
	m.wantLabel("multi", "replaced")

	// Truncate to empty with O_TRUNC and nothing written.
	f, err = os.OpenFile(m.label("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// A truncation nothing was written after is committed on release,
	// which the kernel sends after close returns: wait for it.
	m.waitLabel("x", "")
	m.wantLabel("x", "")
}

func TestLabelAppend(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "hello")
	wantSize(t, "before append", m.label("x"), 5)
	f, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(" world"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("!"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "hello world!")
	wantSize(t, "after append", m.label("x"), 12)

	// O_APPEND|O_CREATE on a new label.
	f, err = os.OpenFile(m.label("log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("line 1\n")
	f.Close()
	f, err = os.OpenFile(m.label("log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("line 2\n")
	f.Close()
	m.wantLabel("log", "line 1\nline 2\n")
}

// TestLabelAppendTwoWriters: an O_APPEND writer whose label another
// descriptor replaced meanwhile must not write at an offset that exists
// only in the other version. Whichever version its copy starts from, the
// result is that version with the appended bytes after it, never a hole of
// NULs or bytes overwritten. The second writer opens the same inode
// through /proc/self/fd, as two processes opening the same path within the
// entry timeout do; going through the path here would race with the change
// feed dropping the entry.
func TestLabelAppendTwoWriters(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	for _, tt := range []struct{ old, rewrite string }{
		{"hello", "0123456789"}, // the other writer makes it longer
		{"hello world", "abc"},  // or shorter
	} {
		m.setLabel("x", tt.old)
		wantSize(t, "before", m.label("x"), int64(len(tt.old)))
		app, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer app.Close()
		// Another writer replaces the label.
		other := fmt.Sprintf("/proc/self/fd/%d", app.Fd())
		if err := os.WriteFile(other, []byte(tt.rewrite), 0); err != nil {
			t.Fatal(err)
		}
		m.wantLabel("x", tt.rewrite)
		if _, err := app.WriteString("!"); err != nil {
			t.Fatal(err)
		}
		if err := app.Close(); err != nil {
			t.Fatal(err)
		}
		got, _, err := m.labelContent("x")
		if err != nil {
			t.Fatal(err)
		}
		if got != tt.old+"!" && got != tt.rewrite+"!" {
			t.Errorf("append to %q racing a rewrite to %q: the label holds %q, want %q or %q",
				tt.old, tt.rewrite, got, tt.old+"!", tt.rewrite+"!")
		}
	}
}

func TestLabelWriteAt(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "hello world")
	f, err := os.OpenFile(m.label("x"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Reading before any write gives the current content.
	if got := readAll(t, f); got != "hello world" {
		t.Errorf("O_RDWR handle reads %q before writing", got)
	}
	if _, err := f.WriteAt([]byte("J"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("W"), 6); err != nil {
		t.Fatal(err)
	}
	// The writer reads its own writes; the store has not changed yet.
	if got := readAll(t, f); got != "Jello World" {
		t.Errorf("writer reads %q, want %q", got, "Jello World")
	}
	m.wantLabel("x", "hello world")
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "Jello World")

	// A write past the end leaves a hole of zeros, as on any file.
	m.setLabel("y", "abc")
	wantSize(t, "before", m.label("y"), 3)
	f, err = os.OpenFile(m.label("y"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("!"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("y", "abc\x00\x00!")
	wantSize(t, "after a write past the end", m.label("y"), 6)

	// A large label changed in the middle: a copy of all of it.
	big := bigContent(5<<20+3, 7)
	if _, err := m.st.ReplaceContentAtLabel(bg, "big", big); err != nil {
		t.Fatal(err)
	}
	f, err = os.OpenFile(m.label("big"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("MIDDLE"), 2<<20); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(big)
	copy(want[2<<20:], "MIDDLE")
	got, _, err := m.labelContent("big")
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("big label after a write in the middle: %d bytes, differs from the %d expected", len(got), len(want))
	}
}

func TestLabelTruncate(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})

	// ftruncate on an open descriptor.
	m.setLabel("x", "hello world")
	f, err := os.OpenFile(m.label("x"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(5); err != nil {
		t.Fatalf("ftruncate: %v", err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 5 {
		t.Errorf("fstat after ftruncate(5): %v, %v", fi, err)
	}
	if _, err := f.WriteAt([]byte("!"), 5); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "hello!")
	wantSize(t, "after ftruncate and write", m.label("x"), 6)

	// truncate(2) on the path: one new version of its own.
	if err := os.Truncate(m.label("x"), 3); err != nil {
		t.Fatalf("truncate: %v", err)
	}
	m.wantLabel("x", "hel")
	wantSize(t, "after truncate(3)", m.label("x"), 3)
	if err := os.Truncate(m.label("x"), 6); err != nil {
		t.Fatalf("truncate to grow: %v", err)
	}
	m.wantLabel("x", "hel\x00\x00\x00")
	wantSize(t, "after truncate(6)", m.label("x"), 6)
	if err := os.Truncate(m.label("x"), 0); err != nil {
		t.Fatalf("truncate to 0: %v", err)
	}
	m.wantLabel("x", "")
	wantSize(t, "after truncate(0)", m.label("x"), 0)

	// truncate on a missing label.
	wantErrno(t, "truncate of a missing label", os.Truncate(m.label("missing"), 0), syscall.ENOENT)
}

// TestLabelStatWithoutRead: the size stat(2) gives is right on its own,
// after writes through other descriptors. Nothing here reads a label
// before it is stat'ed: a short read would correct a stale size in the
// kernel and hide the bug.
func TestLabelStatWithoutRead(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	p := m.label("x")

	writeFile(t, p, "hello")
	wantSize(t, "new label", p, 5)
	writeFile(t, p, "hello, a longer world")
	wantSize(t, "longer rewrite", p, 21)
	writeFile(t, p, "hi")
	wantSize(t, "shorter rewrite", p, 2)

	// A descriptor held open (not reading) while another rewrites.
	held, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	writeFile(t, p, "rewritten while another fd is open")
	wantSize(t, "rewrite beside an open fd (path)", p, 34)
	writeFile(t, p, "short")
	wantSize(t, "shorter rewrite beside an open fd", p, 5)

	// A writer not yet closed: its size, to itself and to stat(2).
	w, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.WriteString("pending content, 27 bytes.."); err != nil {
		t.Fatal(err)
	}
	if fi, err := w.Stat(); err != nil || fi.Size() != 27 {
		t.Errorf("fstat of a pending writer: size %v, err %v; want 27", sizeOf(fi), err)
	}
	// stat(2) of the path while another descriptor's write is pending
	// may give the pending size or the committed one (5), depending on
	// whether the path still leads to the writer's inode: new opens read
	// the committed content, so either is coherent. Nothing else.
	if st := stat(t, p); st.Size != 27 && st.Size != 5 {
		t.Errorf("path while a writer is pending: size %d, want 27 (pending) or 5 (committed)", st.Size)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wantSize(t, "after the writer closed", p, 27)

	// Rename over: the target shows the source's size.
	writeFile(t, m.label("tmp"), "from a temp name, 25 byte")
	if err := os.Rename(m.label("tmp"), p); err != nil {
		t.Fatal(err)
	}
	wantSize(t, "after rename over", p, 25)

	// A change made beside the mount (the store API here; the Theater
	// runtime in life) shows within a second.
	m.setLabel("x", "changed beside the mount")
	if msg := eventually(time.Second, func() string {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			return err.Error()
		}
		if st.Size != 24 {
			return fmt.Sprintf("size %d, want 24", st.Size)
		}
		return ""
	}); msg != "" {
		t.Errorf("stat after a change beside the mount, 1s later: %s", msg)
	}
	// And so does its content.
	if msg := eventually(time.Second, func() string {
		b, err := os.ReadFile(p)
		if err != nil {
			return err.Error()
		}
		if string(b) != "changed beside the mount" {
			return fmt.Sprintf("reads %q", b)
		}
		return ""
	}); msg != "" {
		t.Errorf("read after a change beside the mount, 1s later: %s", msg)
	}
}

func sizeOf(fi os.FileInfo) any {
	if fi == nil {
		return nil
	}
	return fi.Size()
}

// TestLabelTwoWriters: two descriptors write the same label; each close
// is one whole replacement, the last wins, and nobody ever sees a mix.
func TestLabelTwoWriters(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	old := string(bytes.Repeat([]byte("o"), 100_000))
	a := string(bytes.Repeat([]byte("A"), 3<<20))
	b := string(bytes.Repeat([]byte("B"), 2<<20+5))
	m.setLabel("x", old)

	// A reader through the store and one through the mount check, all
	// along, that the label is one whole version.
	valid := map[string]bool{old: true, a: true, b: true}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mixes atomic.Int32
	var mixMsg atomic.Value
	check := func(where, got string, err error) {
		if err != nil {
			return // a version being replaced under us
		}
		if !valid[got] {
			mixes.Add(1)
			mixMsg.Store(fmt.Sprintf("%s read %s", where, clip(got)))
		}
	}
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, _, err := m.labelContent("x")
			check("the store", got, err)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			got, err := os.ReadFile(m.label("x"))
			check("the mount", string(got), err)
		}
	}()

	fa, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fa.Close()
	fb, err := os.OpenFile(m.label("x"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	// Interleave the writes in chunks.
	for off := 0; off < len(a) || off < len(b); off += 256 << 10 {
		if off < len(a) {
			if _, err := fa.WriteAt([]byte(a[off:min(off+256<<10, len(a))]), int64(off)); err != nil {
				t.Fatal(err)
			}
		}
		if off < len(b) {
			if _, err := fb.WriteAt([]byte(b[off:min(off+256<<10, len(b))]), int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	m.wantLabel("x", old)
	if err := fa.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", a)
	if err := fb.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", b)
	close(stop)
	wg.Wait()
	if n := mixes.Load(); n > 0 {
		t.Errorf("%d reads saw a label that was no whole version, e.g. %s", n, mixMsg.Load())
	}
}

// TestLabelSnapshot: a descriptor opened before a label was replaced
// reads the content it opened; a new open reads the new content.
func TestLabelSnapshot(t *testing.T) {
	t.Parallel()
	const (
		oldContent = "the old content, longer than the new"
		newContent = "the new one"
	)
	// "same inode" rewrites through /proc/self/fd, which reaches the
	// inode the reader holds whatever the change feed did to the entry.
	for _, via := range []string{"same inode", "path", "store"} {
		t.Run("replaced through the "+via, func(t *testing.T) {
			t.Parallel()
			m := mountStore(t, MountOptions{})
			m.setLabel("x", oldContent)
			old, err := os.Open(m.label("x"))
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			// Read the first bytes before the change, the rest after.
			head := make([]byte, 4)
			if _, err := old.Read(head); err != nil {
				t.Fatal(err)
			}
			switch via {
			case "same inode":
				if err := os.WriteFile(fmt.Sprintf("/proc/self/fd/%d", old.Fd()), []byte(newContent), 0); err != nil {
					t.Fatal(err)
				}
				m.wantLabel("x", newContent)
			case "path":
				writeFile(t, m.label("x"), newContent)
			case "store":
				m.setLabel("x", newContent)
				// Let the change feed tell the kernel.
				if msg := eventually(time.Second, func() string {
					if b, err := os.ReadFile(m.label("x")); err != nil || string(b) != newContent {
						return fmt.Sprintf("new open reads %q, %v", b, err)
					}
					return ""
				}); msg != "" {
					t.Fatal(msg)
				}
			}
			if got := readFile(t, m.label("x")); got != newContent {
				t.Errorf("a new open reads %q, want %q", got, newContent)
			}
			rest := make([]byte, 100)
			n, _ := old.Read(rest)
			if got := string(head) + string(rest[:n]); got != oldContent {
				t.Errorf("the fd opened before the change reads %q, want its snapshot %q", got, oldContent)
			}
			if got := readAll(t, old); got != oldContent {
				t.Errorf("pread of the fd opened before the change: %q, want %q", got, oldContent)
			}
		})
	}
}

func TestLabelRename(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})

	// The editor's and rsync's way: write a temp name, rename it over.
	m.setLabel("x", "old")
	writeFile(t, m.label(".x.tmp"), "new content")
	if err := os.Rename(m.label(".x.tmp"), m.label("x")); err != nil {
		t.Fatalf("rename over an existing label: %v", err)
	}
	m.wantLabel("x", "new content")
	m.wantNoLabel(".x.tmp")
	wantSize(t, "renamed over", m.label("x"), 11)
	if got := readFile(t, m.label("x")); got != "new content" {
		t.Errorf("reads %q after the rename", got)
	}
	if _, err := os.Stat(m.label(".x.tmp")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("the temp name after the rename: %v, want ENOENT", err)
	}

	// To a new name, and into a namespace.
	if err := os.Rename(m.label("x"), m.label("y")); err != nil {
		t.Fatal(err)
	}
	m.wantNoLabel("x")
	m.wantLabel("y", "new content")
	if err := os.Mkdir(m.label("ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(m.label("y"), m.label("ns/y")); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("ns/y", "new content")
	if got := readFile(t, m.label("ns/y")); got != "new content" {
		t.Errorf("ns/y reads %q", got)
	}

	// A namespace moves with its labels.
	if err := os.Rename(m.label("ns"), m.label("moved")); err != nil {
		t.Fatalf("renaming a namespace: %v", err)
	}
	m.wantLabel("moved/y", "new content")
	m.wantNoLabel("ns/y")
	// Writing through a node that moved writes the label's new name.
	writeFile(t, m.label("moved/y"), "written after the move")
	m.wantLabel("moved/y", "written after the move")

	// RENAME_NOREPLACE over an existing label.
	m.setLabel("a", "a")
	m.setLabel("b", "b")
	err := unix.Renameat2(unix.AT_FDCWD, m.label("a"), unix.AT_FDCWD, m.label("b"), unix.RENAME_NOREPLACE)
	wantErrno(t, "RENAME_NOREPLACE over an existing label", err, syscall.EEXIST)
	m.wantLabel("a", "a")
	m.wantLabel("b", "b")
	if err := unix.Renameat2(unix.AT_FDCWD, m.label("a"), unix.AT_FDCWD, m.label("c"), unix.RENAME_NOREPLACE); err != nil {
		t.Errorf("RENAME_NOREPLACE to a free name: %v", err)
	}
	m.wantLabel("c", "a")
	m.wantNoLabel("a")

	// Out of by-label/ into by-hash/, and the other way.
	h := shaStr("b")
	err = os.Rename(m.label("b"), m.blob(h))
	wantErrno(t, "rename from by-label/ into by-hash/", err, syscall.EXDEV, syscall.EACCES)
	err = os.Rename(m.label("b"), m.path("by-hash", "x"))
	wantErrno(t, "rename from by-label/ into by-hash/ (not a hash)", err, syscall.EXDEV, syscall.EACCES)
	err = os.Rename(m.blob(h), m.label("from-hash"))
	wantErrno(t, "rename from by-hash/ into by-label/", err, syscall.EXDEV, syscall.EACCES)
	m.wantLabel("b", "b")
	m.wantNoLabel("from-hash")

	// Missing source.
	wantErrno(t, "rename of a missing label", os.Rename(m.label("missing"), m.label("z")), syscall.ENOENT)
}

func TestLabelNamespaces(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	if err := os.Mkdir(m.label("team"), 0o755); err != nil {
		t.Fatalf("mkdir: %v", err)
	}
	if ok, err := m.st.IsNamespace(bg, "team"); !ok || err != nil {
		t.Fatalf("IsNamespace(team) = %v, %v after mkdir", ok, err)
	}
	if err := os.MkdirAll(m.label("team/alpha/deep"), 0o755); err != nil {
		t.Fatalf("mkdir -p: %v", err)
	}
	writeFile(t, m.label("team/alpha/notes"), "alpha notes")
	m.wantLabel("team/alpha/notes", "alpha notes")

	ents, err := os.ReadDir(m.label("team/alpha"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range ents {
		got = append(got, fmt.Sprintf("%s dir=%v", e.Name(), e.IsDir()))
	}
	if want := []string{"deep dir=true", "notes dir=false"}; !slices.Equal(got, want) {
		t.Errorf("team/alpha lists %q, want %q", got, want)
	}
	if fi, err := os.Stat(m.label("team/alpha")); err != nil || !fi.IsDir() {
		t.Errorf("stat of a namespace: %v, %v", fi, err)
	}

	wantErrno(t, "mkdir of an existing namespace", os.Mkdir(m.label("team"), 0o755), syscall.EEXIST)
	m.setLabel("plain", "x")
	wantErrno(t, "mkdir over a label", os.Mkdir(m.label("plain"), 0o755), syscall.EEXIST)
	wantErrno(t, "rmdir of a namespace with labels", syscall.Rmdir(m.label("team/alpha")), syscall.ENOTEMPTY, syscall.EEXIST)
	wantErrno(t, "rmdir of a namespace with namespaces", syscall.Rmdir(m.label("team")), syscall.ENOTEMPTY, syscall.EEXIST)
	wantErrno(t, "rmdir of a label", syscall.Rmdir(m.label("plain")), syscall.ENOTDIR)
	wantErrno(t, "unlink of a namespace", syscall.Unlink(m.label("team")), syscall.EISDIR, syscall.EPERM)

	if err := syscall.Rmdir(m.label("team/alpha/deep")); err != nil {
		t.Errorf("rmdir of an empty namespace: %v", err)
	}
	if err := os.Remove(m.label("team/alpha/notes")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m.label("team/alpha")); err != nil {
		t.Errorf("rmdir after emptying it: %v", err)
	}
	if ok, err := m.st.IsNamespace(bg, "team/alpha"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("IsNamespace(team/alpha) = %v, %v after rmdir; want ErrNotFound", ok, err)
	}
	if got := dirNames(t, m.label("team")); len(got) != 0 {
		t.Errorf("team lists %q after rmdir", got)
	}
}

func TestLabelRemove(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.setLabel("x", "hello")
	if err := os.Remove(m.label("x")); err != nil {
		t.Fatalf("rm: %v", err)
	}
	m.wantNoLabel("x")
	if ok, err := m.st.Exists(bg, h); !ok || err != nil {
		t.Errorf("blob after rm of its label: exists %v, %v; want it kept until gc", ok, err)
	}
	if _, err := os.Stat(m.label("x")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("stat after rm: %v, want ENOENT", err)
	}
	if got := dirNames(t, m.path("by-label")); len(got) != 0 {
		t.Errorf("by-label/ lists %q after rm", got)
	}
	wantErrno(t, "rm of a missing label", os.Remove(m.label("x")), syscall.ENOENT)

}

// forgetEntry makes the kernel forget its entry for a label, as the
// change feed does after any change to the label's file (here its mtime,
// so the content stays), and waits until the feed has got that far: the
// next lookup of the name goes to the file system again.
func (m *mounted) forgetEntry(name string) {
	t := m.t
	t.Helper()
	const marker = ".feed-marker"
	m.setLabel(marker, "a")
	wantSize(t, "feed marker", m.label(marker), 1) // cached in the kernel now
	now := time.Now()
	if err := os.Chtimes(filepath.Join(m.dir, store.LabelsDir, filepath.FromSlash(name)), now, now); err != nil {
		t.Fatal(err)
	}
	m.setLabel(marker, "bb")
	if msg := eventually(2*time.Second, func() string {
		var st syscall.Stat_t
		if err := syscall.Stat(m.label(marker), &st); err != nil {
			return err.Error()
		}
		if st.Size != 2 {
			return fmt.Sprintf("marker size %d", st.Size)
		}
		return ""
	}); msg != "" {
		t.Fatalf("the change feed did not get to the marker within 2s: %s", msg)
	}
}

// openWriting sets label to before, opens it with O_TRUNC and writes
// content without closing; with forget, the kernel then forgets its entry
// (as after a change the feed reported). The test's end closes it.
func (m *mounted) openWriting(label, before, content string, forget bool) *os.File {
	m.t.Helper()
	m.setLabel(label, before)
	w, err := os.OpenFile(m.label(label), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		m.t.Fatal(err)
	}
	m.t.Cleanup(func() { w.Close() })
	if _, err := w.WriteString(content); err != nil {
		m.t.Fatal(err)
	}
	if forget {
		m.forgetEntry(label)
	}
	return w
}

// TestLabelRemoveWhileOpen: a label removed while a writer holds it open
// stays removed; like an unlinked file's, what the writer wrote goes
// nowhere. With "entry forgotten", the kernel looked the name up again
// between the open and the rm (the change feed makes it do so after every
// change), so rm goes through a node other than the writer's.
func TestLabelRemoveWhileOpen(t *testing.T) {
	t.Parallel()
	for _, forget := range []bool{false, true} {
		t.Run(fmt.Sprintf("entry forgotten=%v", forget), func(t *testing.T) {
			t.Parallel()
			m := mountStore(t, MountOptions{})
			w := m.openWriting("y", "before", "written by a writer whose label is removed", forget)
			if err := os.Remove(m.label("y")); err != nil {
				t.Fatal(err)
			}
			m.wantNoLabel("y")
			if err := w.Close(); err != nil {
				t.Errorf("close of a writer whose label was removed: %v", err)
			}
			m.wantNoLabel("y")
		})
	}
}

// TestLabelRenameWhileOpen: a writer's label renamed while it is open:
// the node moves and its name with it, so the close commits to the new
// name and the old name stays gone.
func TestLabelRenameWhileOpen(t *testing.T) {
	t.Parallel()
	for _, forget := range []bool{false, true} {
		t.Run(fmt.Sprintf("entry forgotten=%v", forget), func(t *testing.T) {
			t.Parallel()
			m := mountStore(t, MountOptions{})
			w := m.openWriting("a", "old", "new", forget)
			if err := os.Rename(m.label("a"), m.label("b")); err != nil {
				t.Fatal(err)
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			m.wantNoLabel("a")
			m.wantLabel("b", "new")
		})
	}
}

func TestLabelXattr(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	var refs []store.Hash
	for _, c := range []string{"first", "second", "third"} {
		h, err := m.st.PutAtLabel(bg, "multi", []byte(c))
		if err != nil {
			t.Fatal(err)
		}
		refs = append(refs, h)
	}
	p := m.label("multi")

	// The content is the newest ref's.
	wantSize(t, "multi-ref label", p, int64(len("third")))
	if got := readFile(t, p); got != "third" {
		t.Errorf("multi-ref label reads %q, want the newest ref's %q", got, "third")
	}

	n, err := unix.Getxattr(p, xattrRefs, nil)
	if err != nil {
		t.Fatalf("Getxattr(%s) size probe: %v", xattrRefs, err)
	}
	buf := make([]byte, n)
	n, err = unix.Getxattr(p, xattrRefs, buf)
	if err != nil {
		t.Fatalf("Getxattr(%s): %v", xattrRefs, err)
	}
	lines := strings.Split(strings.TrimSuffix(string(buf[:n]), "\n"), "\n")
	var want []string
	for _, h := range refs {
		want = append(want, h.String())
	}
	if !slices.Equal(lines, want) {
		t.Errorf("%s = %q, want %q, oldest first, one a line", xattrRefs, buf[:n], want)
	}
	_, err = unix.Getxattr(p, xattrRefs, make([]byte, 41))
	wantErrno(t, "Getxattr(refs) into a small buffer", err, syscall.ERANGE)

	hb := make([]byte, 40)
	if n, err := unix.Getxattr(p, xattrHash, hb); err != nil || string(hb[:n]) != refs[2].String() {
		t.Errorf("Getxattr(%s) = %q, %v; want the newest ref %s", xattrHash, hb[:n], err, refs[2])
	}

	for _, attr := range []string{"user.other", "user.theater"} {
		_, err := unix.Getxattr(p, attr, make([]byte, 64))
		wantErrno(t, "Getxattr("+attr+")", err, syscall.ENODATA)
	}
	_, err = unix.Getxattr(p, "security.capability", make([]byte, 64))
	wantErrno(t, "Getxattr(security.capability)", err, syscall.ENOTSUP)

	n, err = unix.Listxattr(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	list := make([]byte, n)
	n, err = unix.Listxattr(p, list)
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Split(strings.TrimSuffix(string(list[:n]), "\x00"), "\x00")
	if !slices.Contains(names, xattrHash) || !slices.Contains(names, xattrRefs) {
		t.Errorf("Listxattr = %q, want %s and %s", names, xattrHash, xattrRefs)
	}
	_, err = unix.Listxattr(p, make([]byte, 3))
	wantErrno(t, "Listxattr into a small buffer", err, syscall.ERANGE)

	// Labels and their directories keep no attributes: ENOTSUP, which
	// cp -a and rsync -X pass over, for files and directories alike.
	if err := os.Mkdir(m.label("team"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, target := range []string{p, m.label("team"), m.path("by-label")} {
		for _, attr := range []string{"user.x", "trusted.x"} {
			wantErrno(t, "Setxattr("+attr+") on "+target, unix.Setxattr(target, attr, []byte("1"), 0), syscall.ENOTSUP)
			wantErrno(t, "Removexattr("+attr+") on "+target, unix.Removexattr(target, attr), syscall.ENOTSUP)
		}
	}

	// A single-ref label written through the mount.
	writeFile(t, m.label("one"), "only")
	n, err = unix.Getxattr(m.label("one"), xattrRefs, buf)
	if err != nil || strings.TrimSuffix(string(buf[:n]), "\n") != shaStr("only").String() {
		t.Errorf("refs of a label written through the mount: %q, %v", buf[:n], err)
	}
}

// TestLabelFsync: fsync publishes the label while the file is still open.
func TestLabelFsync(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	f, err := os.Create(m.label("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("first part"); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	m.wantLabel("x", "first part")
	if _, err := f.WriteString(", second part"); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "first part") // not yet
	if err := f.Sync(); err != nil {
		t.Fatalf("second fsync: %v", err)
	}
	m.wantLabel("x", "first part, second part")
	if _, err := f.WriteString("."); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.wantLabel("x", "first part, second part.")

	// fdatasync too.
	f, err = os.OpenFile(m.label("y"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString("data")
	if err := unix.Fdatasync(int(f.Fd())); err != nil {
		t.Fatalf("fdatasync: %v", err)
	}
	m.wantLabel("y", "data")
}

// TestLabelMissingBlob: a label whose ref points to a missing blob lists
// and stats, and reading it fails with EIO and a log line.
func TestLabelMissingBlob(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	missing := shaStr("this blob was never stored")
	if err := theatertest.WriteLabel(dir, "ghost", []string{missing.String()}); err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(dir, "fine", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := theatertest.WriteBlob(dir, []byte("fine")); err != nil {
		t.Fatal(err)
	}
	if err := theatertest.WriteLabel(dir, "fine", []string{shaStr("fine").String()}); err != nil {
		t.Fatal(err)
	}
	m := mountDir(t, dir, MountOptions{})

	if got := dirNames(t, m.path("by-label")); !slices.Equal(got, []string{"fine", "ghost"}) {
		t.Errorf("by-label/ lists %q, want [fine ghost]", got)
	}
	if _, err := os.Stat(m.label("ghost")); err != nil {
		t.Errorf("stat of a label whose blob is missing: %v", err)
	}
	_, err := os.ReadFile(m.label("ghost"))
	wantErrno(t, "reading a label whose blob is missing", err, syscall.EIO)
	if !strings.Contains(m.logs.String(), missing.String()) {
		t.Errorf("no log line names the missing blob %s; log:\n%s", missing, m.logs)
	}
	if got := readFile(t, m.label("fine")); got != "fine" {
		t.Errorf("the other label reads %q", got)
	}
	// Replacing it through the mount repairs it.
	writeFile(t, m.label("ghost"), "repaired")
	m.wantLabel("ghost", "repaired")

	// A label file with no line that is a hash reads as EIO too, not as
	// an empty file, and a write repairs it.
	if err := os.WriteFile(filepath.Join(dir, store.LabelsDir, "garbage"), []byte("this is not a hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = os.ReadFile(m.label("garbage"))
	wantErrno(t, "reading a label with no hash in it", err, syscall.EIO)
	writeFile(t, m.label("garbage"), "repaired")
	m.wantLabel("garbage", "repaired")
	// So does truncate(1), which opens without O_TRUNC.
	if err := os.WriteFile(filepath.Join(dir, store.LabelsDir, "garbage"), []byte("this is not a hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(m.label("garbage"), 0); err != nil {
		t.Fatalf("truncate of a label with no hash in it: %v", err)
	}
	m.wantLabel("garbage", "")
}

// TestLabelNameTooLong: a name the store refuses for its length is
// ENAMETOOLONG, as on any file system, not EINVAL.
func TestLabelNameTooLong(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	long := strings.Repeat("n", store.MaxComponentLen+1)
	err := os.WriteFile(m.label(long), []byte("x"), 0o644)
	wantErrno(t, "creating a label with a 256-byte name", err, syscall.ENAMETOOLONG)
	err = os.Mkdir(m.label(long), 0o755)
	wantErrno(t, "mkdir with a 256-byte name", err, syscall.ENAMETOOLONG)
	if _, err := os.Stat(m.label(long)); !errors.Is(err, syscall.ENOENT) && !errors.Is(err, syscall.ENAMETOOLONG) {
		t.Errorf("stat of a 256-byte name: %v, want ENOENT or ENAMETOOLONG", err)
	}
}

// TestReadOnlyMount: on a read-only mount every change is EROFS, in
// by-label/ as in by-hash/, and reading works.
func TestReadOnlyMount(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReplaceContentAtLabel(bg, "x", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := st.MakeNamespace(bg, "ns"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ReplaceContentAtLabel(bg, actorA+":state", []byte("state")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	m := mountDir(t, dir, MountOptions{Options: Options{ReadOnly: true}})
	h := shaStr("hello")
	p := m.label("x")

	if got := readFile(t, p); got != "hello" {
		t.Errorf("reads %q", got)
	}
	if got := readFile(t, m.blob(h)); got != "hello" {
		t.Errorf("blob reads %q", got)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm()&0o222 != 0 {
		t.Errorf("label on a read-only mount: %v, %v; want no write bits", fi, err)
	}

	openErr := func(path string, flag int) error {
		f, err := os.OpenFile(path, flag, 0o644)
		if err == nil {
			f.Close()
		}
		return err
	}
	for _, r := range []refusal{
		{"WriteFile(existing label)", func() error { return os.WriteFile(p, []byte("x"), 0o644) }},
		{"WriteFile(new label)", func() error { return os.WriteFile(m.label("new"), []byte("x"), 0o644) }},
		{"open O_WRONLY", func() error { return openErr(p, os.O_WRONLY) }},
		{"open O_RDWR", func() error { return openErr(p, os.O_RDWR) }},
		{"open O_APPEND", func() error { return openErr(p, os.O_WRONLY|os.O_APPEND) }},
		{"Truncate", func() error { return os.Truncate(p, 0) }},
		{"Remove", func() error { return os.Remove(p) }},
		{"Rename", func() error { return os.Rename(p, m.label("y")) }},
		{"Mkdir", func() error { return os.Mkdir(m.label("d"), 0o755) }},
		{"Rmdir", func() error { return syscall.Rmdir(m.label("ns")) }},
		{"Chmod", func() error { return os.Chmod(p, 0o600) }},
		{"Chtimes", func() error { return os.Chtimes(p, time.Unix(1, 0), time.Unix(1, 0)) }},
		{"Setxattr", func() error { return syscall.Setxattr(p, "user.x", []byte("v"), 0) }},
		{"WriteFile(blob)", func() error { return os.WriteFile(m.blob(h), []byte("x"), 0o644) }},
		{"WriteFile(new blob)", func() error { return os.WriteFile(m.blob(shaStr("x")), []byte("x"), 0o644) }},
		{"Remove(blob)", func() error { return os.Remove(m.blob(h)) }},
		{"Chmod(blob)", func() error { return os.Chmod(m.blob(h), 0o644) }},
		{"WriteFile(actor label)", func() error { return os.WriteFile(m.path("actors", actorA, "state"), []byte("x"), 0o644) }},
		{"open actor label O_RDWR", func() error { return openErr(m.path("actors", actorA, "state"), os.O_RDWR) }},
	} {
		wantErrno(t, r.name+" on a read-only mount", r.do(), syscall.EROFS)
	}
	m.wantLabel("x", "hello")
	if ok, _ := m.st.IsNamespace(bg, "ns"); !ok {
		t.Errorf("namespace ns gone")
	}
	m.wantNoLabel("new")
}

// TestLargeLabelReadersAndWriters: a large label is read from a sealed
// version (passthrough to its blob where the kernel allows it, else the
// page cache), and that never gets in a writer's way: writing, appending,
// truncating, renaming and removing the label while readers hold it all
// work, each reader reads the version it opened, whole, and a new open
// reads the newest.
func TestLargeLabelReadersAndWriters(t *testing.T) {
	t.Parallel()
	stats := NewStats()
	m := mountStore(t, MountOptions{Stats: stats})
	v1, v2 := bigContent(passthroughMin*2, 1), bigContent(passthroughMin*3, 2)
	writeFile(t, m.label("big"), string(v1))

	// Once the writer's handle is released (the kernel releases it a
	// moment after close returns), a read is served by the kernel without
	// asking the server: by passthrough, or from the page cache the first
	// read filled.
	served := false
	for range 300 {
		before := stats.Snapshot().Ops["read"].Count
		if got := readFile(t, m.label("big")); got != string(v1) {
			t.Fatalf("reading v1: %d bytes", len(got))
		}
		if stats.Snapshot().Ops["read"].Count == before {
			served = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !served {
		t.Errorf("every read of a large label asked the server; want passthrough or the page cache")
	}

	r1, err := os.Open(m.label("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(r1, head); err != nil || !bytes.Equal(head, v1[:1000]) {
		t.Fatalf("first read of v1: %v", err)
	}

	// A new version while r1 reads: the write works, a new open reads it.
	if err := os.WriteFile(m.label("big"), v2, 0o644); err != nil {
		t.Fatalf("writing a label a reader holds: %v", err)
	}
	if got := readFile(t, m.label("big")); got != string(v2) {
		t.Errorf("a new open after the write reads %d bytes, want v2 (%d)", len(got), len(v2))
	}
	if fi, err := os.Stat(m.label("big")); err != nil || fi.Size() != int64(len(v2)) {
		t.Errorf("stat after the write: %v, %v; want size %d", fi, err, len(v2))
	}

	// r2 holds v2 while it is appended to, truncated and renamed.
	r2, err := os.Open(m.label("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	a, err := os.OpenFile(m.label("big"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatalf("opening for append a label a reader holds: %v", err)
	}
	if _, err := a.WriteString("tail"); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, m.label("big")); got != string(v2)+"tail" {
		t.Errorf("after the append: %d bytes, want v2+tail", len(got))
	}
	if err := os.Truncate(m.label("big"), passthroughMin+1); err != nil {
		t.Fatalf("truncate of a label a reader holds: %v", err)
	}
	if got := readFile(t, m.label("big")); got != string(v2[:passthroughMin+1]) {
		t.Errorf("after truncate: %d bytes, want %d", len(got), passthroughMin+1)
	}
	if err := os.Rename(m.label("big"), m.label("moved")); err != nil {
		t.Fatalf("rename of a label a reader holds: %v", err)
	}
	m.wantNoLabel("big")
	if err := os.Remove(m.label("moved")); err != nil {
		t.Fatalf("rm of a label a reader holds: %v", err)
	}
	m.wantNoLabel("moved")

	// Each reader still reads its version whole.
	rest, err := io.ReadAll(r1)
	if err != nil || !bytes.Equal(append(head, rest...), v1) {
		t.Errorf("r1 read %d bytes (%v), want v1 whole (%d)", len(head)+len(rest), err, len(v1))
	}
	all, err := io.ReadAll(r2)
	if err != nil || !bytes.Equal(all, v2) {
		t.Errorf("r2 read %d bytes (%v), want v2 whole (%d)", len(all), err, len(v2))
	}
}

// TestLargeLabelConcurrentReadersAndWriter: readers of a large label open,
// read and close it in loops while a writer replaces it, appends to it and
// truncates it by path. No call fails (no EIO from the kernel refusing to
// mix a passthrough file with others on one inode, no ESTALE reaching a
// writer), and every read is one version whole.
func TestLargeLabelConcurrentReadersAndWriter(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	versions := map[string]bool{}
	var vmu sync.Mutex
	version := func(i int) []byte {
		b := bigContent(passthroughMin+4096*(i%5), byte(i))
		vmu.Lock()
		versions[string(b)] = true
		versions[string(b)+"+"] = true // appended to
		vmu.Unlock()
		return b
	}
	writeFile(t, m.label("big"), string(version(0)))
	stop := time.Now().Add(time.Second)
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for r := range 3 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				b, err := os.ReadFile(m.label("big"))
				if err != nil {
					errs <- fmt.Errorf("reader %d: %w", r, err)
					return
				}
				vmu.Lock()
				ok := versions[string(b)] || isTruncatedVersion(versions, b)
				vmu.Unlock()
				if !ok {
					errs <- fmt.Errorf("reader %d read %d bytes that are no version whole", r, len(b))
					return
				}
			}
		})
	}
	wg.Go(func() {
		for i := 1; time.Now().Before(stop); i++ {
			var err error
			switch i % 3 {
			case 0:
				err = os.WriteFile(m.label("big"), version(i), 0o644)
			case 1:
				var f *os.File
				if f, err = os.OpenFile(m.label("big"), os.O_WRONLY|os.O_APPEND, 0); err == nil {
					_, err = f.WriteString("+")
					if cerr := f.Close(); err == nil {
						err = cerr
					}
				}
			case 2:
				err = os.Truncate(m.label("big"), passthroughMin)
			}
			if err != nil {
				errs <- fmt.Errorf("writer, step %d: %w", i, err)
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// isTruncatedVersion reports whether b is the first passthroughMin bytes
// of a version (what truncate(2) leaves).
func isTruncatedVersion(versions map[string]bool, b []byte) bool {
	if len(b) != passthroughMin {
		return false
	}
	for v := range versions {
		if len(v) >= len(b) && v[:len(b)] == string(b) {
			return true
		}
	}
	return false
}

// TestStatfsShowsStoreDisk: df on the mount shows the file system that
// holds the store, at any path in it, so tools that check for room before
// writing find it.
func TestStatfsShowsStoreDisk(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	writeFile(t, m.label("x"), "content")
	var want syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &want); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{m.mnt, m.label("x"), m.path("by-hash")} {
		var got syscall.Statfs_t
		if err := syscall.Statfs(p, &got); err != nil {
			t.Fatalf("statfs %s: %v", p, err)
		}
		if got.Blocks != want.Blocks || got.Bsize != want.Bsize || got.Files != want.Files {
			t.Errorf("statfs %s: %d blocks of %d, %d inodes; the store's disk has %d of %d, %d",
				p, got.Blocks, got.Bsize, got.Files, want.Blocks, want.Bsize, want.Files)
		}
		if got.Bavail == 0 || got.Bavail > want.Blocks {
			t.Errorf("statfs %s: %d blocks available of %d", p, got.Bavail, want.Blocks)
		}
	}
}
