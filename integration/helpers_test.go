package integration

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// cmdTimeout bounds every command a test runs, so a hung mount fails the
// test instead of the whole run.
const cmdTimeout = 30 * time.Second

// emptyHash is the SHA-1 of no bytes: the blob of an empty label.
const emptyHash = "da39a3ee5e6b4b0d3255bfef95601890afd80709"

var hashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

func sha1Hex(b []byte) string {
	s := sha1.Sum(b)
	return hex.EncodeToString(s[:])
}

// result is what one command produced.
type result struct {
	cmd            string
	code           int // -1 when killed
	stdout, stderr string
	timedOut       bool
}

func (r result) String() string {
	return fmt.Sprintf("%s: exit %d\nstdout: %q\nstderr: %q", r.cmd, r.code, r.stdout, r.stderr)
}

// env is the environment of every command: C locale (English errors,
// byte-order sorting), and no store settings from the caller.
func env() []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "THEATER_STORE", "THEATER_HOME", "LANG", "LANGUAGE", "LC_ALL", "LC_MESSAGES", "LC_COLLATE":
			continue
		}
		out = append(out, kv)
	}
	return append(out, "LC_ALL=C")
}

// run runs a command to the end (or cmdTimeout) in dir.
func run(t *testing.T, dir string, name string, args ...string) result {
	t.Helper()
	return runTimeout(t, cmdTimeout, dir, name, args...)
}

// command makes a command in its own process group, all of which is
// killed when ctx ends: a shell's children stuck on a hung mount too. dir
// must not be in a mount (see inDir); abortDir names the mount the command
// works in, whose server is killed if the command cannot be.
func command(ctx context.Context, dir, abortDir, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		pid := cmd.Process.Pid
		err := syscall.Kill(-pid, syscall.SIGKILL)
		// A process waiting on a flush (close) to a hung server cannot be
		// killed until the server answers: kill the server, which fails
		// every request waiting on it, so Wait can return.
		go func() {
			deadline := time.Now().Add(2 * time.Second)
			for alive(pid) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if alive(pid) && abortDir != "" {
				abortServersFor(abortDir)
			}
		}()
		return err
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// abortServersFor kills the servers of the recorded mountpoints that dir is
// in, leaving stale mounts for the tests' cleanup to clear.
func abortServersFor(dir string) {
	mountpoints.Lock()
	all := slices.Clone(mountpoints.all)
	mountpoints.Unlock()
	for _, m := range all {
		if dir == m || strings.HasPrefix(dir, m+"/") {
			for _, pid := range serverPIDs(bin, m) {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// runTimeout runs a command to the end in dir, failing the test if it takes
// longer than d.
func runTimeout(t *testing.T, d time.Duration, dir string, name string, args ...string) result {
	t.Helper()
	return runIn(t, d, dir, "", name, args...)
}

// runIn is runTimeout for a command working in the mount abortDir.
func runIn(t *testing.T, d time.Duration, dir, abortDir string, name string, args ...string) result {
	t.Helper()
	r, err := tryRun(d, dir, abortDir, name, args...)
	if err != nil {
		t.Fatalf("%s: %v (stderr %q)", r.cmd, err, r.stderr)
	}
	return r
}

// tryRun runs a command to the end, or until d has passed: then it is
// killed and the result has timedOut set, with an error.
func tryRun(d time.Duration, dir, abortDir string, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := command(ctx, dir, abortDir, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{cmd: strings.Join(append([]string{filepath.Base(name)}, args...), " "), stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return r, nil
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
		return r, nil
	case ctx.Err() != nil:
		r.code, r.timedOut = -1, true
		return r, fmt.Errorf("timed out after %v", d)
	}
	r.code = -1
	return r, err
}

// cli runs theater-storefs with args. Whatever it does, it must never print
// a Go stack trace.
func cli(t *testing.T, args ...string) result {
	t.Helper()
	r := run(t, "/", bin, args...)
	for _, trace := range []string{"panic:", "[running]:", "goroutine 1 ["} {
		if strings.Contains(r.stderr, trace) {
			t.Errorf("stack trace printed to the user:\n%s", r)
		}
	}
	return r
}

// sh runs a shell script in dir (normally the mountpoint).
func sh(t *testing.T, dir, script string) result {
	t.Helper()
	r := runIn(t, cmdTimeout, "/", dir, "sh", "-c", inDir(dir, script))
	r.cmd = "sh -c " + q(script)
	return r
}

// inDir makes script run in dir. The shell changes directory itself:
// exec.Cmd.Dir would have the forked child do it before exec, and a child
// stuck on a hung mount there holds this whole process in vfork, beyond the
// reach of any timeout.
func inDir(dir, script string) string {
	return "cd -- " + q(dir) + " || exit 125\n" + script
}

// mustSh runs a script that must succeed and returns its stdout.
func mustSh(t *testing.T, dir, script string) string {
	t.Helper()
	r := sh(t, dir, script)
	if r.code != 0 {
		t.Fatalf("want success:\n%s", r)
	}
	return r.stdout
}

// shFails runs a script that must fail with want in its error output.
func shFails(t *testing.T, dir, script, want string) {
	t.Helper()
	r := sh(t, dir, script)
	if r.code == 0 {
		t.Errorf("want failure with %q, got success:\n%s", want, r)
		return
	}
	if !strings.Contains(r.stderr, want) {
		t.Errorf("want %q in the error:\n%s", want, r)
	}
}

// q quotes s for sh.
func q(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// theaterStore writes a store the way Theater does.
func theaterStore(t *testing.T, opts theatertest.Options) (string, *theatertest.Manifest) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	m, err := theatertest.WriteStore(dir, opts)
	if err != nil {
		t.Fatalf("WriteStore: %v", err)
	}
	return dir, m
}

// emptyStore returns an empty store directory: mounting makes it a store.
func emptyStore(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.Mkdir(dir, 0o755); err != nil { // as make mount does
		t.Fatal(err)
	}
	return dir
}

// newMountpoint makes an empty directory to mount on and records it.
// Its removal (t.TempDir's cleanup) is registered before any unmount, so it
// runs after it.
func newMountpoint(t *testing.T) string {
	t.Helper()
	// Resolved, as /proc/mounts shows it.
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountpoints.Lock()
	mountpoints.all = append(mountpoints.all, mnt)
	mountpoints.Unlock()
	return mnt
}

// mountStore mounts store at a new mountpoint through the command line and
// unmounts it when the test ends. flags go after "mount".
func mountStore(t *testing.T, store string, flags ...string) string {
	t.Helper()
	mnt := newMountpoint(t)
	mountAt(t, store, mnt, flags...)
	return mnt
}

// wantLogLine checks that the server's log file has a line holding every
// one of wants.
func wantLogLine(t *testing.T, logFile string, wants ...string) {
	t.Helper()
	b, err := os.ReadFile(logFile)
	if err != nil {
		t.Errorf("server log: %v", err)
		return
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if !slices.ContainsFunc(wants, func(w string) bool { return !strings.Contains(line, w) }) {
			return
		}
	}
	t.Errorf("no line in the server's --log-file holds all of %q; the log:\n%s", wants, b)
}

// mountAt mounts store at mnt, which must succeed, and registers the
// unmount. It returns the server's --log-file.
func mountAt(t *testing.T, store, mnt string, flags ...string) (logFile string) {
	t.Helper()
	logFile = filepath.Join(t.TempDir(), "server.log")
	args := append([]string{"--verbose", "--store", store, "mount", "--log-file", logFile}, flags...)
	r := cli(t, append(args, mnt)...)
	if r.code != 0 {
		t.Fatalf("mount failed:\n%s", r)
	}
	t.Cleanup(func() {
		cleanupMount(t, mnt)
		if t.Failed() {
			if b, err := os.ReadFile(logFile); err == nil && len(b) > 0 {
				t.Logf("server log for %s:\n%s", mnt, b)
			}
		}
	})
	return logFile
}

// mountEntry is one line of /proc/self/mounts.
type mountEntry struct {
	fsType  string
	options []string
}

// mountsAt lists the mounts at p, the one in effect last.
func mountsAt(p string) []mountEntry {
	b, _ := os.ReadFile("/proc/self/mounts")
	var out []mountEntry
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 4 && unescapeMount(f[1]) == p {
			out = append(out, mountEntry{fsType: f[2], options: strings.Split(f[3], ",")})
		}
	}
	return out
}

// isMounted reports whether something is mounted at p.
func isMounted(p string) bool { return len(mountsAt(p)) > 0 }

// mountFsType returns the type of the file system mounted at p, or "".
func mountFsType(p string) string {
	ms := mountsAt(p)
	if len(ms) == 0 {
		return ""
	}
	return ms[len(ms)-1].fsType
}

// unescapeMount undoes /proc/mounts' octal escapes (\040 for a space).
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// unmount runs `theater-storefs unmount`, retrying with backoff while the
// mount is busy.
func unmount(t *testing.T, mnt string) result {
	t.Helper()
	var r result
	delay := 20 * time.Millisecond
	for try := 0; try < 6; try++ {
		r, _ = tryRun(15*time.Second, "/", "", bin, "unmount", mnt)
		if r.code == 0 || r.timedOut || !strings.Contains(strings.ToLower(r.stderr), "busy") {
			return r
		}
		time.Sleep(delay) // backoff for EBUSY, not for correctness
		delay *= 2
	}
	return r
}

// cleanupMount unmounts mnt if still mounted (lazily as a last resort) and
// makes sure the server exits. It never stops half-way: leaving a mount or
// a server behind fails the test.
func cleanupMount(t *testing.T, mnt string) {
	t.Helper()
	pids := serverPIDs(bin, mnt)
	if isMounted(mnt) {
		r := unmount(t, mnt)
		if r.code != 0 && isMounted(mnt) {
			t.Errorf("cleanup: unmount failed, unmounting lazily:\n%s", r)
			if r.timedOut {
				// The server does not answer: kill it, so that the
				// lazy unmount (and whatever waits on it) goes through.
				for _, pid := range pids {
					syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			lazy := []string{"umount", "-l", mnt}
			if os.Geteuid() != 0 {
				lazy = []string{"fusermount3", "-u", "-z", mnt}
			}
			if r, err := tryRun(15*time.Second, "/", "", lazy[0], lazy[1:]...); err != nil || r.code != 0 {
				t.Errorf("cleanup: %s failed: %v\n%s", strings.Join(lazy, " "), err, r)
			}
		}
		if isMounted(mnt) {
			t.Errorf("cleanup: %s is still mounted", mnt)
		}
	}
	for _, pid := range pids {
		if !waitExit(pid, exitTimeout) {
			t.Errorf("cleanup: server %d for %s did not exit after unmount; killing it", pid, mnt)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// serverPIDs finds the live server processes (`mount --foreground`) of
// binary exe serving mnt.
func serverPIDs(exe, mnt string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
		if args[0] != exe || args[len(args)-1] != mnt || !slices.Contains(args, "mount") || !slices.Contains(args, "--foreground") {
			continue
		}
		if alive(pid) {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

// serverPID returns the one server serving mnt.
func serverPID(t *testing.T, mnt string) int {
	t.Helper()
	pids := serverPIDs(bin, mnt)
	if len(pids) != 1 {
		t.Fatalf("want one server process for %s, found %v", mnt, pids)
	}
	return pids[0]
}

// alive reports whether pid runs (a zombie has exited).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	return s[i+2] != 'Z' && s[i+2] != 'X'
}

// start starts cmd; its Wait's result arrives on the channel returned.
func start(t *testing.T, cmd *exec.Cmd) chan error {
	t.Helper()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Every receive gets the exit status, so that a test that saw the
	// exit and a cleanup that waits for it do not wait forever.
	done := make(chan error)
	go func() {
		err := cmd.Wait()
		for {
			done <- err
		}
	}()
	return done
}

// gone polls until every thread of pid has exited (after the main
// thread, another may still be held in the kernel), or d has passed.
func gone(pid int, d time.Duration) bool {
	return pollUntil(d, func() bool {
		tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return !slices.ContainsFunc(tasks, func(e os.DirEntry) bool {
			tid, err := strconv.Atoi(e.Name())
			return err == nil && alive(tid)
		})
	})
}

// waitExit polls until pid has exited, or d has passed.
func waitExit(pid int, d time.Duration) bool {
	return pollUntil(d, func() bool { return !alive(pid) })
}

// pollUntil polls cond until it holds (true) or d has passed (false).
func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// eventually polls f until it returns nil or d passes; then fails with its
// last error.
func eventually(t *testing.T, d time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", d, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// storeState is what a store directory holds.
type storeState struct {
	blobs      map[string][]byte // data/: name -> content
	labels     map[string]string // labels/: label name -> file content
	namespaces []string          // directories under labels/, sorted
	tmp        []string          // names in tmp/, sorted
}

// readStore reads a store's files as they are, without judging them.
func readStore(t *testing.T, dir string) storeState {
	t.Helper()
	st := storeState{blobs: map[string][]byte{}, labels: map[string]string{}}
	ents, err := os.ReadDir(filepath.Join(dir, "data"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "data", e.Name()))
		if err != nil {
			t.Fatalf("data/%s: %v", e.Name(), err)
		}
		st.blobs[e.Name()] = b
	}
	labels := filepath.Join(dir, "labels")
	err = filepath.WalkDir(labels, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(labels, p)
		switch {
		case p == labels:
		case d.IsDir():
			st.namespaces = append(st.namespaces, filepath.ToSlash(rel))
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			st.labels[filepath.ToSlash(rel)] = string(b)
		default:
			t.Errorf("labels/%s: not a regular file or directory (%v)", rel, d.Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(st.namespaces)
	tents, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, e := range tents {
		st.tmp = append(st.tmp, e.Name())
	}
	return st
}

// checkStore reads the store and checks what must always hold: every
// data/ file is named by the SHA-1 of its content; every label file is
// hashes of existing blobs joined by "\n", no trailing newline, no
// duplicates; tmp/ holds nothing but `verified`. Temp files are removed
// when the kernel releases a handle, which it does after close returns, so
// tmp/ is given a moment to empty.
func checkStore(t *testing.T, dir string) storeState {
	t.Helper()
	return checkStoreSpools(t, dir, false)
}

// checkStoreSpools is checkStore for a moment when a writer still holds a
// label open: its spool file in tmp/ is allowed.
func checkStoreSpools(t *testing.T, dir string, writerOpen bool) storeState {
	t.Helper()
	var st storeState
	eventually(t, 3*time.Second, func() error {
		st = readStore(t, dir)
		for _, name := range st.tmp {
			if writerOpen && strings.HasPrefix(name, "spool-") {
				continue
			}
			if name != "verified" {
				return fmt.Errorf("stray file in %s/tmp: %s (tmp holds %q)", dir, name, st.tmp)
			}
		}
		return nil
	})
	for name, b := range st.blobs {
		if !hashRE.MatchString(name) {
			t.Errorf("stray file in data/: %q", name)
			continue
		}
		if h := sha1Hex(b); h != name {
			t.Errorf("data/%s holds content hashing to %s", name, h)
		}
	}
	for name, content := range st.labels {
		refs := strings.Split(content, "\n")
		seen := map[string]bool{}
		for _, h := range refs {
			switch {
			case !hashRE.MatchString(h):
				t.Errorf("labels/%s: %q is not a hash (file %q; want hashes joined by \\n, no trailing newline)", name, h, content)
			case seen[h]:
				t.Errorf("labels/%s: duplicate ref %s", name, h)
			case st.blobs[h] == nil:
				t.Errorf("labels/%s: ref %s has no blob in data/", name, h)
			}
			seen[h] = true
		}
	}
	return st
}

// wantLabel checks that the store's label file holds exactly one ref, the
// blob of content, and that the blob is there.
func (st storeState) wantLabel(t *testing.T, name string, content []byte) {
	t.Helper()
	h := sha1Hex(content)
	got, ok := st.labels[name]
	switch {
	case !ok:
		t.Errorf("labels/%s: missing (labels: %v)", name, st.labelNames())
	case got != h:
		t.Errorf("labels/%s = %q, want the single ref %s (of content %q)", name, got, h, abbrev(content))
	}
	if b, ok := st.blobs[h]; !ok || !bytes.Equal(b, content) {
		t.Errorf("data/%s: missing (content %q)", h, abbrev(content))
	}
}

// wantNoLabel checks that the store has no label name.
func (st storeState) wantNoLabel(t *testing.T, name string) {
	t.Helper()
	if got, ok := st.labels[name]; ok {
		t.Errorf("labels/%s: still there, holding %q", name, got)
	}
}

// wantLabels checks that the store holds exactly the labels names.
func (st storeState) wantLabels(t *testing.T, names ...string) {
	t.Helper()
	slices.Sort(names)
	if got := st.labelNames(); !slices.Equal(got, names) {
		t.Errorf("labels in the store: %q, want %q", got, names)
	}
}

func (st storeState) labelNames() []string {
	var out []string
	for n := range st.labels {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// abbrev shortens long content for messages.
func abbrev(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + fmt.Sprintf("...(%d bytes)", len(b))
	}
	return string(b)
}

// fsck runs `theater-storefs fsck` on store.
func fsck(t *testing.T, store string) result {
	t.Helper()
	return cli(t, "--store", store, "fsck")
}

// mustFsck runs fsck, which must find nothing wrong.
func mustFsck(t *testing.T, store string) {
	t.Helper()
	if r := fsck(t, store); r.code != 0 {
		t.Errorf("fsck: want exit 0:\n%s", r)
	}
}

// catFile reads a file through the mount with cat.
func catFile(t *testing.T, mnt, path string) string {
	t.Helper()
	return mustSh(t, mnt, "cat "+q(path))
}

// statFile returns `stat -c FORMAT path` through the mount.
func statFile(t *testing.T, mnt, format, path string) string {
	t.Helper()
	return strings.TrimSpace(mustSh(t, mnt, "stat -c "+q(format)+" "+q(path)))
}

// lines splits command output into its lines.
func lines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// treeSnapshot records every file under dir (relative path -> content;
// directories as "<dir>"), to show that something did not change it.
func treeSnapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if d.IsDir() {
			out[rel] = "<dir>"
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		out[rel] = string(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// diffTrees describes how two snapshots differ, or "".
func diffTrees(before, after map[string]string) string {
	var diffs []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			diffs = append(diffs, "removed "+p)
		case a != b:
			diffs = append(diffs, "changed "+p)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			diffs = append(diffs, "added "+p)
		}
	}
	slices.Sort(diffs)
	return strings.Join(diffs, ", ")
}
