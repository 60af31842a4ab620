package fs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/splice"
	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
	"golang.org/x/sys/unix"
)

// openFds lists this process's open file descriptors and what they are.
func openFds(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("listing /proc/self/fd: %v", err)
	}
	var out []string
	for _, e := range ents {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		out = append(out, e.Name()+" -> "+target)
	}
	return out
}

// storeFds lists this process's descriptors open on files in the store
// directory other than the directories themselves and tmp/verified: the
// blobs, spools and label files the mount opened for its handles.
func storeFds(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, fd := range openFds(t) {
		_, target, _ := strings.Cut(fd, " -> ")
		rel, ok := strings.CutPrefix(target, dir+"/")
		if !ok {
			continue
		}
		rel = strings.TrimSuffix(rel, " (deleted)")
		switch rel {
		case store.DataDir, store.LabelsDir, store.TmpDir, store.TmpDir + "/verified":
			continue
		}
		out = append(out, fd)
	}
	return out
}

// exercise does a bit of everything through the mount.
func exercise(t *testing.T, m *mounted, man *theatertest.Manifest) {
	t.Helper()
	for i := range 20 {
		name := fmt.Sprintf("leak/%d", i)
		if i == 0 {
			if err := os.MkdirAll(m.label("leak"), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		writeFile(t, m.label(name), strings.Repeat("x", i*1000))
		f, err := os.OpenFile(m.label(name), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("appended")
		f.Sync()
		f.Close()
		if got := readFile(t, m.label(name)); len(got) != i*1000+8 {
			t.Fatalf("%s reads %d bytes", name, len(got))
		}
		if err := os.Truncate(m.label(name), 10); err != nil {
			t.Fatal(err)
		}
		unix.Getxattr(m.label(name), xattrRefs, make([]byte, 100))
		unix.Getxattr(m.label(name), "user.none", make([]byte, 100))
		if i%2 == 0 {
			if err := os.Rename(m.label(name), m.label(name+".moved")); err != nil {
				t.Fatal(err)
			}
		} else if err := os.Remove(m.label(name)); err != nil {
			t.Fatal(err)
		}
	}
	// An open reader and a writer abandoned without writing.
	r, err := os.Open(m.label("leak/0.moved"))
	if err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(m.label("leak/2.moved"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, r)
	readAll(t, w)
	r.Close()
	w.Close()
	// A failed write: ENOENT on a label removed under an open writer.
	w, err = os.OpenFile(m.label("leak/4.moved"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.WriteString("discarded")
	os.Remove(m.label("leak/4.moved"))
	w.Close()

	for _, name := range dirNames(t, m.path("by-hash")) {
		readFile(t, m.path("by-hash", name))
		unix.Getxattr(m.path("by-hash", name), xattrHash, make([]byte, 64))
	}
	os.WriteFile(m.path("by-hash", "x"), nil, 0o644) // refused
	for _, id := range man.Actors {
		for _, name := range dirNames(t, m.path("actors", id, "chain")) {
			readFile(t, m.path("actors", id, "chain", name))
		}
		readFile(t, m.path("actors", id, "chain-head"))
		readFile(t, m.path("actors", id, "state"))
	}
	var walked int
	filepath.WalkDir(m.path("by-label"), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			os.ReadFile(p)
			walked++
		}
		return nil
	})
	if walked == 0 {
		t.Fatal("walked no labels")
	}
}

// quietGoroutines waits (a second at most) until the number of goroutines
// has stopped falling, and returns it.
func quietGoroutines() int {
	n, same := runtime.NumGoroutine(), 0
	for deadline := time.Now().Add(time.Second); same < 5 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		if m := runtime.NumGoroutine(); m < n {
			n, same = m, 0
		} else {
			same++
		}
	}
	return n
}

// TestNoLeaks: after many operations and an unmount, the goroutines and
// file descriptors the mount used are all released. Not parallel: it
// counts what the whole process holds.
func TestNoLeaks(t *testing.T) {
	skipWithoutFUSE(t)
	run := func(t *testing.T) {
		dir, man := writeTheaterStore(t, theatertest.Options{Seed: 7, Actors: 2, ChainLength: 4})
		m := mountDir(t, dir, MountOptions{})
		exercise(t, m, man)
		// The kernel sends RELEASE after close(2) returns, in the
		// background, and drops what is still queued at unmount:
		// give the releases their moment (TestUnmountWithOpenFiles
		// is about what happens when they never come).
		if msg := eventually(2*time.Second, func() string {
			if fds := storeFds(t, m.dir); len(fds) > 0 {
				return fmt.Sprintf("still open: %q", fds)
			}
			return ""
		}); msg != "" {
			t.Errorf("after every file was closed, before unmount: %s", msg)
		}
		m.unmount()
	}
	// A first mount warms up what a process makes once (the runtime's
	// poller and signal handling, package state), which is no leak.
	t.Run("warm-up", run)

	// Let the warm-up's goroutines finish, or the baseline counts them.
	// go-fuse keeps a process-wide pool of pipes for splice, which grows
	// with the reads in flight at once: empty it on both sides.
	baseG := quietGoroutines()
	splice.ClearSplicePool()
	baseFds := openFds(t)
	t.Run("measured", run)
	if n := splice.Used(); n != 0 {
		t.Errorf("%d splice pipes still in use after unmount", n)
	}
	splice.ClearSplicePool()

	var g int
	var fds []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, fds = runtime.NumGoroutine(), openFds(t)
		if g <= baseG && len(fds) <= len(baseFds) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if g > baseG {
		buf := make([]byte, 1<<20)
		t.Errorf("%d goroutines after unmount, %d before mounting; now running:\n%s",
			g, baseG, buf[:runtime.Stack(buf, true)])
	}
	if len(fds) > len(baseFds) {
		var extra []string
		for _, fd := range fds {
			if !slices.Contains(baseFds, fd) {
				extra = append(extra, fd)
			}
		}
		t.Errorf("%d open fds after unmount, %d before mounting; new: %q", len(fds), len(baseFds), extra)
	}
	// The mountpoint is free again.
	var st syscall.Statfs_t
	if err := syscall.Statfs(t.TempDir(), &st); err != nil {
		t.Errorf("statfs: %v", err)
	}
}

// TestUnmountWithOpenFiles: files still open when the mount goes away (a
// lazy or forced unmount, or a RELEASE the kernel had not sent yet) get no
// Release from go-fuse. Their blob files and spools must not stay open
// for the life of the process.
func TestUnmountWithOpenFiles(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.put("a blob")
	m.setLabel("x", "a label")
	blob, err := os.Open(m.blob(h))
	if err != nil {
		t.Fatal(err)
	}
	defer blob.Close()
	reader, err := os.Open(m.label("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	writer, err := os.OpenFile(m.label("x"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writer.Close()
	if _, err := writer.WriteString("pending"); err != nil {
		t.Fatal(err)
	}
	if fds := storeFds(t, m.dir); len(fds) == 0 {
		t.Fatal("the open files hold nothing in the store; the test cannot see a leak")
	}

	// Cut the connection: no RELEASE will ever come.
	m.abort()
	blob.Close()
	reader.Close()
	writer.Close()
	m.unmount()

	if msg := eventually(2*time.Second, func() string {
		if fds := storeFds(t, m.dir); len(fds) > 0 {
			return fmt.Sprintf("still open: %q", fds)
		}
		return ""
	}); msg != "" {
		t.Errorf("after the unmount and store.Close: %s", msg)
	}
}
