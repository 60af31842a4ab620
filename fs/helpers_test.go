package fs

import (
	"bytes"
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
)

// Helpers shared by the tests of package fs. The tests that mount do so in
// this process, into t.TempDir(), and talk to the mount with plain os and
// syscall calls: no external tool is run (fork/exec from a process serving
// a FUSE mount can deadlock) and nothing is mmapped through the mount.

var bg = context.Background()

// sha is the plain SHA-1 of b, computed independently of the store.
func sha(b []byte) store.Hash { return store.Hash(sha1.Sum(b)) }

func shaStr(s string) store.Hash { return sha([]byte(s)) }

// logBuffer collects what the file system and the store log, so tests can
// look for a line; under -v it is also echoed to stderr. It never calls
// t.Log, which would panic if a goroutine logged after the test ended.
type logBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	echo bool
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.echo {
		os.Stderr.Write(p)
	}
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newLogger(verbose bool) (*slog.Logger, *logBuffer) {
	lb := &logBuffer{echo: verbose}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// mounted is a store mounted in this process.
type mounted struct {
	t    *testing.T
	mnt  string // the mountpoint
	dir  string // the store directory
	st   *store.Store
	srv  *fuse.Server
	root *rootNode
	logs *logBuffer
	once sync.Once

	aborted      atomic.Bool // the watchdog cut the connection
	stopWatchdog func()
}

// skipWithoutFUSE skips a test that needs to mount, with the reason.
func skipWithoutFUSE(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("cannot mount: %v", err)
	}
	if os.Geteuid() != 0 {
		if _, err := os.Stat("/usr/bin/fusermount3"); err != nil {
			if _, err := os.Stat("/bin/fusermount3"); err != nil {
				t.Skip("cannot mount: not root and no fusermount3")
			}
		}
	}
}

// mountStore opens a fresh store in a temp directory and mounts it.
func mountStore(t *testing.T, opts MountOptions) *mounted {
	t.Helper()
	return mountDir(t, filepath.Join(t.TempDir(), "store"), opts)
}

// mountDir opens the store in dir (which may hold a store Theater wrote)
// and mounts it into a temp directory. The test's cleanup unmounts it and
// closes the store; unmount may also be called earlier, once.
func mountDir(t *testing.T, dir string, opts MountOptions) *mounted {
	t.Helper()
	skipWithoutFUSE(t)
	log, lb := newLogger(testing.Verbose())
	st, err := store.Open(dir, store.Options{Logger: log})
	if err != nil {
		t.Fatalf("store.Open(%s): %v", dir, err)
	}
	mnt := t.TempDir()
	if opts.Logger == nil {
		opts.Logger = log
	}
	opts.Debug = testing.Verbose()
	opts.FsName = dir
	srv, root, err := mount(mnt, st, opts)
	if err != nil {
		st.Close()
		t.Fatalf("Mount(%s): %v", mnt, err)
	}
	m := &mounted{t: t, mnt: mnt, dir: st.Dir(), st: st, srv: srv, root: root, logs: lb}
	liveMounts.Store(m, struct{}{})
	// No test here needs a mount for long: one still up after
	// mountLifetime is taken for a deadlocked server, whose stuck
	// system calls would otherwise hang the test binary for good.
	m.stopWatchdog = m.watchdog(mountLifetime, "the test using this mount")
	t.Cleanup(m.unmount)
	return m
}

// mountLifetime bounds how long a test may keep a mount.
const mountLifetime = 20 * time.Second

// unmount unmounts (retrying while the kernel says EBUSY, then detaching
// lazily), waits for the server to stop and closes the store.
func (m *mounted) unmount() {
	m.once.Do(func() {
		t := m.t
		m.stopWatchdog()
		if err := m.unmountRetry(); err != nil {
			t.Errorf("unmount %s: %v; detaching it lazily", m.mnt, err)
			if err := syscall.Unmount(m.mnt, syscall.MNT_DETACH); err != nil {
				t.Errorf("lazy unmount %s: %v", m.mnt, err)
			}
		}
		stopped := make(chan struct{})
		go func() {
			m.srv.Wait()
			close(stopped)
		}()
		wait := 10 * time.Second
		if m.aborted.Load() {
			// Its handlers may be stuck for good: the test failed
			// already, say so and move on.
			wait = time.Second
		}
		select {
		case <-stopped:
		case <-time.After(wait):
			t.Errorf("server of %s did not stop within %v of unmount", m.mnt, wait)
		}
		liveMounts.Delete(m)
		if err := m.st.Close(); err != nil {
			t.Errorf("closing store: %v", err)
		}
	})
}

func (m *mounted) unmountRetry() error {
	if os.Geteuid() != 0 {
		// go-fuse runs fusermount3; it retries EBUSY itself.
		return m.srv.Unmount()
	}
	// As root, unmount directly: go-fuse's Unmount falls back to
	// running fusermount, and a fork/exec here is what we avoid.
	delay := 5 * time.Millisecond
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Unmount(m.mnt, 0)
		if err == nil || !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(delay)
		delay = min(2*delay, 500*time.Millisecond)
	}
}

// path returns the path of elem (slash-separated) inside the mount.
func (m *mounted) path(elem ...string) string {
	return filepath.Join(append([]string{m.mnt}, elem...)...)
}

// label returns the path of a label under by-label/.
func (m *mounted) label(name string) string {
	return filepath.Join(m.mnt, "by-label", filepath.FromSlash(name))
}

// blob returns the path of a blob under by-hash/.
func (m *mounted) blob(h store.Hash) string {
	return filepath.Join(m.mnt, "by-hash", h.String())
}

// put stores content with the store API (not through the mount).
func (m *mounted) put(content string) store.Hash {
	m.t.Helper()
	h, err := m.st.Store(bg, []byte(content))
	if err != nil {
		m.t.Fatalf("Store(%q): %v", content, err)
	}
	return h
}

// setLabel makes a label hold exactly content, with the store API.
func (m *mounted) setLabel(name, content string) store.Hash {
	m.t.Helper()
	h, err := m.st.ReplaceContentAtLabel(bg, name, []byte(content))
	if err != nil {
		m.t.Fatalf("ReplaceContentAtLabel(%q): %v", name, err)
	}
	return h
}

// labelContent returns the content of a label's newest ref and its refs,
// through the store API.
func (m *mounted) labelContent(name string) (string, []store.Hash, error) {
	refs, err := m.st.GetByLabel(bg, name)
	if err != nil {
		return "", nil, err
	}
	if len(refs) == 0 {
		return "", refs, fmt.Errorf("label %q holds no refs", name)
	}
	b, err := m.st.Get(bg, refs[len(refs)-1])
	return string(b), refs, err
}

// wantLabel fails unless the store says the label holds exactly one ref,
// whose content is want.
// waitLabel gives the store up to two seconds to show the label holding
// want, for commits that happen on release, after close has returned.
func (m *mounted) waitLabel(name, want string) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, _, err := m.labelContent(name)
		if err == nil && got == want || time.Now().After(deadline) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (m *mounted) wantLabel(name, want string) {
	m.t.Helper()
	got, refs, err := m.labelContent(name)
	if err != nil {
		m.t.Fatalf("label %q in the store: %v", name, err)
	}
	if len(refs) != 1 {
		m.t.Errorf("label %q holds %d refs, want 1: %v", name, len(refs), refs)
	}
	if got != want {
		m.t.Fatalf("label %q in the store = %q, want %q", name, clip(got), clip(want))
	}
}

// wantNoLabel fails unless the store says the label does not exist.
func (m *mounted) wantNoLabel(name string) {
	m.t.Helper()
	if refs, err := m.st.GetByLabel(bg, name); !errors.Is(err, store.ErrNotFound) {
		m.t.Fatalf("label %q in the store: refs %v, err %v; want ErrNotFound", name, refs, err)
	}
}

// clip shortens long content in messages.
func clip(s string) string {
	if len(s) > 80 {
		return fmt.Sprintf("%q...(%d bytes)", s[:80], len(s))
	}
	return s
}

// wantErrno fails unless err carries the errno want (or one of also).
func wantErrno(t *testing.T, what string, err error, want syscall.Errno, also ...syscall.Errno) {
	t.Helper()
	for _, en := range append([]syscall.Errno{want}, also...) {
		if errors.Is(err, en) {
			return
		}
	}
	names := []string{errnoName(want)}
	for _, en := range also {
		names = append(names, errnoName(en))
	}
	t.Errorf("%s: err = %v, want %s", what, err, strings.Join(names, " or "))
}

func errnoName(en syscall.Errno) string { return fmt.Sprintf("%s (%d)", en.Error(), int(en)) }

// readFile reads a file through the mount and fails the test on error.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("ReadFile(%s): %v", path, err)
	}
	return string(b)
}

// writeFile writes a file through the mount and fails the test on error.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatalf("WriteFile(%s): %v", path, err)
	}
}

// readAll reads a whole open file from offset 0 with pread, so the file
// offset is left alone.
func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<40))
	if err != nil {
		t.Fatalf("reading %s: %v", f.Name(), err)
	}
	return string(b)
}

// dirNames lists a directory in the order the file system returned it
// (os.ReadDir would sort it and hide the order).
func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		t.Fatalf("Readdirnames(%s): %v", dir, err)
	}
	return names
}

// stat returns a file's attributes through the mount, without reading it.
func stat(t *testing.T, path string) syscall.Stat_t {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("Stat(%s): %v", path, err)
	}
	return st
}

// eventually polls cond until it holds or the deadline passes; it returns
// the last failure message, or "" once cond holds.
func eventually(d time.Duration, cond func() string) string {
	deadline := time.Now().Add(d)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		msg := cond()
		if msg == "" || time.Now().After(deadline) {
			return msg
		}
		time.Sleep(delay)
	}
}

// writeTheaterStore writes a store the way Theater does into a temp
// directory and returns it with its manifest.
func writeTheaterStore(t *testing.T, opts theatertest.Options) (string, *theatertest.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	m, err := theatertest.WriteStore(dir, opts)
	if err != nil {
		t.Fatalf("theatertest.WriteStore: %v", err)
	}
	return dir, m
}

func sortedStrings(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
