package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// exitTimeout is how long a server gets to exit once unmounted.
const exitTimeout = 5 * time.Second

// wantOneLineError checks a failed command: exit code, one line on
// stderr holding every one of wants.
func wantOneLineError(t *testing.T, r result, code int, wants ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("want exit %d:\n%s", code, r)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("want exactly one line on stderr:\n%s", r)
	}
	for _, w := range wants {
		if !strings.Contains(strings.ToLower(r.stderr), strings.ToLower(w)) {
			t.Errorf("want %q in the error:\n%s", w, r)
		}
	}
}

// wantNotMounted checks that a refused mount left nothing behind.
func wantNotMounted(t *testing.T, mnt string) {
	t.Helper()
	if isMounted(mnt) {
		t.Errorf("%s is mounted after a refused mount", mnt)
	}
	if pids := serverPIDs(bin, mnt); len(pids) != 0 {
		t.Errorf("servers %v run for %s after a refused mount", pids, mnt)
	}
}

// TestMountReadyOnReturn: when `mount` returns, the mount answers: ls of
// by-hash lists every blob at once, with no wait. Five rounds on the same
// mountpoint, each unmounted cleanly.
func TestMountReadyOnReturn(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 8, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	want := slices.Sorted(maps.Keys(m.Blobs))
	before := treeSnapshot(t, store)
	mnt := newMountpoint(t)
	for round := range 5 {
		mountAt(t, store, mnt)
		r := sh(t, mnt, "ls by-hash")
		if got := lines(r.stdout); r.code != 0 || !slices.Equal(got, want) {
			t.Fatalf("round %d: right after mount returned:\n%s\nwant %q", round, r, want)
		}
		if typ := mountFsType(mnt); typ != "fuse.theater-storefs" {
			t.Errorf("round %d: /proc/mounts type at %s = %q, want fuse.theater-storefs", round, mnt, typ)
		}
		pid := serverPID(t, mnt)
		if r := unmount(t, mnt); r.code != 0 {
			t.Fatalf("round %d: unmount:\n%s", round, r)
		}
		if isMounted(mnt) {
			t.Fatalf("round %d: still mounted after unmount returned", round)
		}
		if !waitExit(pid, exitTimeout) {
			t.Fatalf("round %d: server %d still runs %v after unmount", round, pid, exitTimeout)
		}
	}
	checkStore(t, store)
	if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
		t.Errorf("mounting and unmounting changed the store: %s", d)
	}
}

// TestMountTwiceRefused: a second mount on a mounted mountpoint fails with
// a clear message, and the first mount carries on.
func TestMountTwiceRefused(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 9, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	mnt := mountStore(t, store)
	pid := serverPID(t, mnt)

	r := cli(t, "--store", store, "mount", mnt)
	wantOneLineError(t, r, 1, mnt, "already mounted")
	r = cli(t, "--store", emptyStore(t), "mount", mnt)
	wantOneLineError(t, r, 1, mnt, "already mounted")
	if n := len(mountsAt(mnt)); n != 1 {
		t.Errorf("%d mounts at %s, want 1", n, mnt)
	}
	if pids := serverPIDs(bin, mnt); !slices.Equal(pids, []int{pid}) {
		t.Errorf("servers for %s: %v, want only the first, %d", mnt, pids, pid)
	}
	if got := catFile(t, mnt, "by-label/team/beta"); got != "beta" {
		t.Errorf("the first mount after a refused second: cat by-label/team/beta = %q", got)
	}
	mustSh(t, mnt, "echo still > by-label/still")
	st := checkStore(t, store)
	st.wantLabel(t, "still", []byte("still\n"))
	if len(st.labels) != len(m.Labels)+1 {
		t.Errorf("the store holds %d labels, want %d", len(st.labels), len(m.Labels)+1)
	}
}

// TestMountpointNotEmptyRefused: mounting over files would hide them.
func TestMountpointNotEmptyRefused(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := newMountpoint(t)
	if err := os.WriteFile(filepath.Join(mnt, "precious"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "--store", store, "mount", mnt)
	wantOneLineError(t, r, 1, mnt, "not empty")
	wantNotMounted(t, mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "precious")); err != nil || string(b) != "mine" {
		t.Errorf("the file in the mountpoint: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(store, "data")); err == nil {
		t.Errorf("a refused mount made a store in %s", store)
	}

	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	r = cli(t, "--store", store, "mount", file)
	wantOneLineError(t, r, 1, file, "not a directory")
	wantNotMounted(t, file)
}

// TestMountOverlapRefused: a mountpoint inside the store, or a store inside
// the mountpoint, would have the server read through its own mount.
func TestMountOverlapRefused(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, _ := theaterStore(t, theatertest.Options{Seed: 10, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	inside := filepath.Join(store, "mnt")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	mountpoints.Lock()
	mountpoints.all = append(mountpoints.all, inside)
	mountpoints.Unlock()
	before := treeSnapshot(t, store)
	r := cli(t, "--store", store, "mount", inside)
	wantOneLineError(t, r, 1, "inside the store")
	wantNotMounted(t, inside)
	if d := diffTrees(before, treeSnapshot(t, store)); d != "" {
		t.Errorf("a refused mount changed the store: %s", d)
	}

	// The same through a relative path and a symlink.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(store, link); err != nil {
		t.Fatal(err)
	}
	r = runTimeout(t, cmdTimeout, store, bin, "--store", ".", "mount", "mnt")
	wantOneLineError(t, r, 1, "inside the store")
	r = cli(t, "--store", link, "mount", inside)
	wantOneLineError(t, r, 1, "inside the store")
	wantNotMounted(t, inside)

	// The store inside the mountpoint.
	mnt := newMountpoint(t)
	r = cli(t, "--store", filepath.Join(mnt, "store"), "mount", mnt)
	wantOneLineError(t, r, 1, "inside the mountpoint")
	wantNotMounted(t, mnt)
	if ents, _ := os.ReadDir(mnt); len(ents) != 0 {
		t.Errorf("a refused mount left %v in the mountpoint", ents)
	}
}

// TestMountReadOnly: with --read-only every change fails with "Read-only
// file system", reads work, and the store is not touched at all.
func TestMountReadOnly(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 11, Actors: 1, ChainLength: 3, PlainBlobs: 2})
	before := treeSnapshot(t, store)
	mnt := mountStore(t, store, "--read-only")

	if got := catFile(t, mnt, "by-label/notes"); got != "note three" {
		t.Errorf("cat by-label/notes = %q", got)
	}
	id := m.Actors[0]
	if got, want := catFile(t, mnt, "actors/"+id+"/chain-head"), string(m.Blobs[m.Chains[id][2]]); got != want {
		t.Errorf("cat chain-head = %q, want %q", got, want)
	}
	if got := lines(mustSh(t, mnt, "ls by-hash")); len(got) != len(m.Blobs) {
		t.Errorf("ls by-hash lists %d blobs, want %d", len(got), len(m.Blobs))
	}
	h := m.Labels[theatertest.LabelTeamBeta][0]
	for _, script := range []string{
		"echo x > by-label/new",
		"echo x > by-label/notes",
		"echo x >> by-label/notes",
		"touch by-label/new",
		"touch by-label/notes",
		"truncate -s 0 by-label/notes",
		"printf x | dd of=by-label/notes conv=notrunc status=none",
		"sed -i s/note/NOTE/ by-label/notes",
		"rm by-label/notes",
		"mv by-label/notes by-label/moved",
		"mkdir by-label/ns",
		"rmdir by-label/plain",
		"chmod 600 by-label/notes",
		"setfattr -n user.x -v 1 by-label/notes",
		"echo x > by-hash/" + h,
		"rm by-hash/" + h,
		"touch by-hash/" + h,
		"echo x > actors/" + id + "/chain-head",
	} {
		shFails(t, mnt, script, "Read-only file system")
	}
	if got := catFile(t, mnt, "by-label/notes"); got != "note three" {
		t.Errorf("cat by-label/notes after refused changes = %q", got)
	}
	if ms := mountsAt(mnt); len(ms) != 1 || !slices.Contains(ms[0].options, "ro") {
		t.Errorf("mounts at %s: %+v, want one, with the option ro", mnt, ms)
	}
	if d := diffTrees(before, treeSnapshot(t, store)); d != "" {
		t.Errorf("a read-only mount changed the store: %s", d)
	}
	if r := unmount(t, mnt); r.code != 0 {
		t.Fatalf("unmount:\n%s", r)
	}
	if d := diffTrees(before, treeSnapshot(t, store)); d != "" {
		t.Errorf("a read-only mount changed the store: %s", d)
	}
}

// TestUnmountStopsServer: `theater-storefs unmount` unmounts and the
// server process exits; unmounting again says it is not mounted.
func TestUnmountStopsServer(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, mnt, pid := servedLabel(t, "kept\n")

	if r := unmount(t, mnt); r.code != 0 {
		t.Fatalf("unmount:\n%s", r)
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted", mnt)
	}
	if !waitExit(pid, exitTimeout) {
		t.Errorf("server %d still runs %v after unmount", pid, exitTimeout)
	}
	r := cli(t, "unmount", mnt)
	wantOneLineError(t, r, 1, mnt, "not mounted")
	st := checkStore(t, store)
	st.wantLabel(t, "x", []byte("kept\n"))
}

// TestSignalUnmounts: SIGTERM or SIGINT to the server unmounts cleanly and
// the server exits.
func TestSignalUnmounts(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			t.Parallel()
			store, mnt, pid := servedLabel(t, "kept\n")
			if err := syscall.Kill(pid, sig); err != nil {
				t.Fatal(err)
			}
			if !waitExit(pid, exitTimeout) {
				t.Fatalf("server %d still runs %v after %v", pid, exitTimeout, sig)
			}
			if isMounted(mnt) {
				t.Errorf("%s still mounted after %v and the server's exit", mnt, sig)
			} else if ents, err := os.ReadDir(mnt); err != nil || len(ents) != 0 {
				t.Errorf("the mountpoint after %v: %v, %v; want an empty directory", sig, ents, err)
			}
			checkStore(t, store).wantLabel(t, "x", []byte("kept\n"))
		})
	}
}

// TestForeground: `mount --foreground` serves until unmounted, then exits
// with status 0.
func TestForeground(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := newMountpoint(t)
	cmd := command(context.Background(), "/", "", bin, "--store", store, "mount", "--foreground", mnt)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	exited := start(t, cmd)
	t.Cleanup(func() {
		cleanupMount(t, mnt)
		select {
		case <-exited:
		case <-time.After(exitTimeout):
			t.Errorf("foreground server did not exit after unmount")
			cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for !isMounted(mnt) {
		select {
		case err := <-exited:
			t.Fatalf("mount --foreground exited before mounting: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mount --foreground did not mount within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	mustSh(t, mnt, "echo fg > by-label/x && ls by-hash >/dev/null")
	select {
	case err := <-exited:
		t.Fatalf("mount --foreground returned while mounted: %v", err)
	default:
	}
	if pids := serverPIDs(bin, mnt); !slices.Equal(pids, []int{cmd.Process.Pid}) {
		t.Errorf("servers for %s: %v, want only the foreground process %d", mnt, pids, cmd.Process.Pid)
	}
	if r := unmount(t, mnt); r.code != 0 {
		t.Fatalf("unmount:\n%s", r)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("mount --foreground after unmount: %v\n%s", err, stderr.String())
		}
	case <-time.After(exitTimeout):
		t.Fatalf("mount --foreground still runs %v after unmount", exitTimeout)
	}
	checkStore(t, store).wantLabel(t, "x", []byte("fg\n"))
}

// TestKilledServerStaleMountRecovers: after SIGKILL the mountpoint is a
// stale mount ("Transport endpoint is not connected"); the next mount on
// it clears it and works.
func TestKilledServerStaleMountRecovers(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 12, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	mnt := mountStore(t, store)
	// stat just before the crash, as a process using the mount would: the
	// kernel keeps the mountpoint's attributes for a moment after.
	mustSh(t, mnt, "echo before > by-label/x && stat . >/dev/null")
	pid := serverPID(t, mnt)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if !waitExit(pid, exitTimeout) {
		t.Fatalf("server %d survived SIGKILL", pid)
	}
	// The kernel may close the dead server's /dev/fuse a moment after its
	// exit; a request caught in between fails with "Software caused
	// connection abort". Then the mount is stale.
	eventually(t, exitTimeout, func() error {
		r := sh(t, "/", "ls "+q(mnt))
		if r.code != 0 && strings.Contains(r.stderr, "Transport endpoint is not connected") {
			return nil
		}
		return fmt.Errorf("want a stale mount after SIGKILL:\n%s", r)
	})
	if !isMounted(mnt) {
		t.Fatalf("%s: want a stale mount after SIGKILL, found none", mnt)
	}

	mountAt(t, store, mnt)
	if n := len(mountsAt(mnt)); n != 1 {
		t.Errorf("%d mounts at %s after recovering, want 1 (the stale one cleared)", n, mnt)
	}
	if got := lines(mustSh(t, mnt, "ls by-hash")); len(got) != len(m.Blobs)+1 {
		t.Errorf("ls by-hash after recovery lists %d blobs, want %d", len(got), len(m.Blobs)+1)
	}
	if got := catFile(t, mnt, "by-label/x"); got != "before\n" {
		t.Errorf("cat by-label/x after recovery = %q", got)
	}
	mustSh(t, mnt, "echo after > by-label/x")
	wantLabelContent(t, mnt, store, "x", []byte("after\n"))
	mustFsck(t, store)
}

// TestUmountEndsServer: the system's umount and fusermount3 -u unmount too,
// and the server exits.
func TestUmountEndsServer(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	for _, tool := range []string{"umount", "fusermount3 -u"} {
		t.Run(strings.Fields(tool)[0], func(t *testing.T) {
			t.Parallel()
			switch {
			case strings.HasPrefix(tool, "fusermount3"):
				if _, err := exec.LookPath("fusermount3"); err != nil {
					t.Skip("fusermount3 is not installed")
				}
			case os.Geteuid() != 0:
				t.Skip("umount of a FUSE mount needs root")
			}
			store, mnt, pid := servedLabel(t, "x\n")
			mustSh(t, "/", tool+" "+q(mnt))
			if isMounted(mnt) {
				t.Errorf("%s still mounted after %s", mnt, tool)
			}
			if !waitExit(pid, exitTimeout) {
				t.Errorf("server %d still runs %v after %s", pid, exitTimeout, tool)
			}
			checkStore(t, store).wantLabel(t, "x", []byte("x\n"))
		})
	}
}

// TestMountErrors: a mountpoint that does not exist fails with one line
// naming it and exit 1; bad usage exits 2.
func TestMountErrors(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	missing := filepath.Join(t.TempDir(), "no", "such", "dir")
	r := cli(t, "--store", store, "mount", missing)
	wantOneLineError(t, r, 1, missing, "no such file or directory")
	wantNotMounted(t, missing)
	if _, err := os.Stat(filepath.Join(store, "data")); err == nil {
		t.Errorf("a refused mount made a store in %s", store)
	}

	r = cli(t, "--store", store, "mount")
	wantOneLineError(t, r, 2)
	r = cli(t, "--store", store, "mount", "a", "b")
	wantOneLineError(t, r, 2)

	// A mistyped --store: no directory there, or one that holds other
	// things, is not made into a store.
	mnt := newMountpoint(t)
	typo := filepath.Join(t.TempDir(), "stroe")
	r = cli(t, "--store", typo, "mount", mnt)
	wantOneLineError(t, r, 1, typo, "no store at")
	wantNotMounted(t, mnt)
	if _, err := os.Stat(typo); err == nil {
		t.Errorf("mount made the store %s", typo)
	}
	home := t.TempDir()
	if err := os.WriteFile(filepath.Join(home, "notes.txt"), []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = cli(t, "--store", home, "mount", mnt)
	wantOneLineError(t, r, 1, home, "not a store")
	src := filepath.Join(t.TempDir(), "src")
	if err := os.WriteFile(src, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	r = cli(t, "--store", home, "put", src)
	wantOneLineError(t, r, 1, home, "not a store")
	if ents, _ := os.ReadDir(home); len(ents) != 1 {
		t.Errorf("refused commands added to %s: %v", home, ents)
	}
	// A directory holding only what is no one's files (a file system's
	// lost+found, hidden files, our tmp/) may become a store.
	fresh := t.TempDir()
	for _, d := range []string{"lost+found", "tmp"} {
		if err := os.Mkdir(filepath.Join(fresh, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(fresh, ".keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "--store", fresh, "put", src); r.code != 0 {
		t.Errorf("put into a directory with lost+found, tmp/ and .keep: %s", r)
	}

	r = cli(t, "unmount", missing)
	wantOneLineError(t, r, 1, missing)
	notMounted := t.TempDir()
	r = cli(t, "unmount", notMounted)
	wantOneLineError(t, r, 1, notMounted, "not mounted")
}

// TestStoppedServerForceUnmount: a mount whose server does not answer (here
// stopped with SIGSTOP; in the wild, a server killed while the kernel held
// one of its threads) makes mount and unmount report it in one line
// instead of hanging, and unmount --force frees everything: the process
// waiting on the mount gets an error, the mountpoint is free, the server
// exits once it runs again, and a new mount works.
func TestStoppedServerForceUnmount(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, mnt, pid := servedLabel(t, "hello\n")
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGCONT) })

	// A reader left waiting on the stopped server.
	reader := exec.Command("cat", filepath.Join(mnt, "by-label", "x"))
	readerDone := start(t, reader)
	t.Cleanup(func() { reader.Process.Kill() })

	start := time.Now()
	r := cli(t, "--store", store, "mount", mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "does not answer") || !strings.Contains(r.stderr, "unmount --force") {
		t.Errorf("mount on a mount that does not answer: want exit 1 naming unmount --force, got\n%s", r)
	}
	if r = cli(t, "unmount", mnt); r.code != 1 || !strings.Contains(r.stderr, "does not answer") {
		t.Errorf("unmount of a mount that does not answer: want exit 1 saying so, got\n%s", r)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("mount and unmount took %v to report a mount that does not answer", d)
	}
	select {
	case err := <-readerDone:
		t.Fatalf("the reader finished while the server was stopped: %v", err)
	default:
	}

	if r = cli(t, "unmount", "--force", mnt); r.code != 0 {
		t.Fatalf("unmount --force: %s", r)
	}
	select {
	case err := <-readerDone:
		if err == nil {
			t.Errorf("the waiting reader succeeded after the abort; want an error")
		}
	case <-time.After(exitTimeout):
		t.Fatal("the waiting reader still waits after unmount --force")
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after unmount --force: %v", mnt, mountsAt(mnt))
	}
	syscall.Kill(pid, syscall.SIGCONT)
	if !waitExit(pid, exitTimeout) {
		t.Fatalf("server %d still runs after its mount was aborted", pid)
	}

	mountAt(t, store, mnt)
	if got := catFile(t, mnt, "by-label/x"); got != "hello\n" {
		t.Errorf("by-label/x after the new mount = %q", got)
	}
	mustFsck(t, store)
}

// TestForceUnmountBusyDetaches: unmount --force of a mount that answers
// but is busy (a file open on it) never aborts it: the mount is detached,
// the open file still reads, and the server exits once it is closed.
func TestForceUnmountBusyDetaches(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	_, mnt, pid := servedLabel(t, "still here\n")
	f, err := os.Open(filepath.Join(mnt, "by-label", "x"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if r := cli(t, "unmount", mnt); r.code != 1 || !strings.Contains(r.stderr, "busy") {
		t.Errorf("unmount of a busy mount: want exit 1 saying busy, got\n%s", r)
	}
	if r := cli(t, "unmount", "--force", mnt); r.code != 0 {
		t.Fatalf("unmount --force of a busy mount: %s", r)
	}
	if isMounted(mnt) {
		t.Errorf("%s still mounted after unmount --force", mnt)
	}
	b, err := io.ReadAll(f)
	if err != nil || string(b) != "still here\n" {
		t.Errorf("reading the file left open: %q, %v; want its content (detached, not aborted)", b, err)
	}
	f.Close()
	if !waitExit(pid, exitTimeout) {
		t.Errorf("server %d still runs after its detached mount's last file closed", pid)
	}
}

// servedLabel mounts a fresh store holding label x with content, and
// returns the store, the mountpoint and the server's pid.
func servedLabel(t *testing.T, content string) (store, mnt string, pid int) {
	t.Helper()
	store = emptyStore(t)
	mnt = mountStore(t, store)
	mustSh(t, mnt, "printf %s "+q(content)+" > by-label/x")
	return store, mnt, serverPID(t, mnt)
}
