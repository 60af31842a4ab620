package integration

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"golang.org/x/sys/unix"
)

// TestByHashRefusesSyscalls: each system call that would change a blob,
// by-hash/ itself or a chain/ entry fails with EACCES, EROFS on a
// --read-only mount, and changes nothing. TestByHashRefusesChanges goes
// through the tools (and checks their messages); this makes the calls
// itself, so that no tool's fallback hides an errno: open for writing,
// truncate(2), link(2), symlink(2), mknod(2), mkdir(2), unlink(2),
// rename(2), setxattr(2) and removexattr(2) in every namespace, utimensat(2)
// with times and with UTIME_NOW, chmod(2) to setuid, chown(2).
func TestByHashRefusesSyscalls(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	for _, ro := range []bool{false, true} {
		name, flags, want := "read-write", []string(nil), syscall.EACCES
		if ro {
			name, flags, want = "read-only", []string{"--read-only"}, syscall.EROFS
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			store, m := theaterStore(t, theatertest.Options{Seed: 24, Actors: 1, ChainLength: 2, PlainBlobs: 2})
			before := withoutTmp(treeSnapshot(t, store))
			mnt := mountStore(t, store, flags...)
			h := m.Labels[theatertest.LabelTeamBeta][0]
			id := m.Actors[0]
			missing := filepath.Join(mnt, "by-hash", sha1Hex([]byte("not in the store")))
			label := filepath.Join(mnt, "by-label", theatertest.LabelNotes)
			dir := filepath.Join(mnt, "by-hash")
			then := unix.NsecToTimespec(1e18)
			now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
			for _, p := range []string{
				filepath.Join(mnt, "by-hash", h),
				filepath.Join(mnt, "actors", id, "chain", "000001-"+m.Chains[id][0]),
			} {
				rel, _ := filepath.Rel(mnt, p)
				calls := []struct {
					name string
					call func() error
				}{
					{"open O_WRONLY", func() error { return openClose(p, os.O_WRONLY) }},
					{"open O_RDWR", func() error { return openClose(p, os.O_RDWR) }},
					{"open O_WRONLY|O_APPEND", func() error { return openClose(p, os.O_WRONLY|os.O_APPEND) }},
					{"open O_RDONLY|O_TRUNC", func() error { return openClose(p, os.O_RDONLY|os.O_TRUNC) }},
					{"open O_CREAT|O_EXCL (new name)", func() error { return openClose(missing, os.O_CREATE|os.O_EXCL|os.O_WRONLY) }},
					{"truncate 0", func() error { return unix.Truncate(p, 0) }},
					{"truncate longer", func() error { return unix.Truncate(p, 1<<20) }},
					{"link to a new name", func() error { return unix.Link(p, missing) }},
					{"link a label in", func() error { return unix.Link(label, missing) }},
					{"symlink", func() error { return unix.Symlink(p, missing) }},
					{"mknod FIFO", func() error { return unix.Mknod(missing, unix.S_IFIFO|0o644, 0) }},
					{"mknod regular", func() error { return unix.Mknod(missing, unix.S_IFREG|0o644, 0) }},
					{"mknod char device", func() error { return unix.Mknod(missing, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))) }},
					{"mkdir", func() error { return unix.Mkdir(missing, 0o755) }},
					{"unlink", func() error { return unix.Unlink(p) }},
					{"rename", func() error { return unix.Rename(p, missing) }},
					{"setxattr user.", func() error { return unix.Setxattr(p, "user.x", []byte("1"), 0) }},
					{"setxattr user.theater.hash", func() error { return unix.Setxattr(p, "user.theater.hash", []byte(emptyHash), 0) }},
					{"setxattr trusted.", func() error { return unix.Setxattr(p, "trusted.x", []byte("1"), 0) }},
					{"setxattr security.", func() error { return unix.Setxattr(p, "security.x", []byte("1"), 0) }},
					{"removexattr", func() error { return unix.Removexattr(p, "user.theater.hash") }},
					{"utimensat times", func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{then, then}, 0) }},
					{"utimensat UTIME_NOW", func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, p, now, 0) }},
					{"chmod setuid", func() error { return unix.Chmod(p, 0o4755) }},
					{"chmod", func() error { return unix.Chmod(p, 0o644) }},
					{"chown", func() error { return unix.Chown(p, 65534, 65534) }},
					{"chmod by-hash/", func() error { return unix.Chmod(dir, 0o777) }},
					{"chown by-hash/", func() error { return unix.Chown(dir, 65534, 65534) }},
					{"utimensat by-hash/", func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, dir, now, 0) }},
					{"setxattr by-hash/", func() error { return unix.Setxattr(dir, "user.x", []byte("1"), 0) }},
				}
				for _, c := range calls {
					err := within(t, cmdTimeout, c.call)
					if !errors.Is(err, want) {
						t.Errorf("%s on %s: %v, want %v", c.name, rel, err, want)
					}
				}
			}
			if got := statFile(t, mnt, "%a %s", "by-hash/"+h); got != "444 4" {
				t.Errorf("stat by-hash/%s = %q after the refused calls, want mode 444, size 4", h, got)
			}
			if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
				t.Errorf("refused calls changed the store: %s", d)
			}
		})
	}
}

func openClose(p string, flags int) error {
	f, err := os.OpenFile(p, flags, 0o644)
	if err == nil {
		f.Close()
	}
	return err
}

// hostileModes gives a Theater-written store's files every special mode
// bit a file can carry, and adds what is not a regular file or directory.
func hostileModes(t *testing.T, store string) {
	t.Helper()
	err := filepath.WalkDir(store, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := os.FileMode(0o777) | os.ModeSetuid | os.ModeSetgid | os.ModeSticky
		if !d.IsDir() {
			mode = 0o755 | os.ModeSetuid | os.ModeSetgid
		}
		return os.Chmod(p, mode)
	})
	if err != nil {
		t.Fatal(err)
	}
	// A device node and a FIFO where a label and a blob could be.
	if err := unix.Mknod(filepath.Join(store, "labels", "device"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Logf("mknod a device in labels/: %v (skipped)", err)
	}
	if err := unix.Mkfifo(filepath.Join(store, "data", sha1Hex([]byte("fifo"))), 0o666); err != nil {
		t.Fatal(err)
	}
}

// wantPlainModes stats every file in the mount (lstat, as `find` does) and
// checks that each is a regular file or directory with no setuid, setgid or
// sticky bit.
func wantPlainModes(t *testing.T, mnt string) (n int) {
	t.Helper()
	err := within(t, cmdTimeout, func() error {
		return filepath.WalkDir(mnt, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, syscall.EIO) || errors.Is(err, syscall.ENOENT) {
					return nil // a damaged entry: not what this looks at
				}
				return err
			}
			var st unix.Stat_t
			if err := unix.Lstat(p, &st); err != nil {
				return nil
			}
			n++
			rel, _ := filepath.Rel(mnt, p)
			switch typ := st.Mode & unix.S_IFMT; {
			case typ != unix.S_IFREG && typ != unix.S_IFDIR:
				t.Errorf("%s: file type %#o; want only regular files and directories (no devices, FIFOs, sockets or symlinks)", rel, typ)
			case st.Mode&(unix.S_ISUID|unix.S_ISGID|unix.S_ISVTX) != 0:
				t.Errorf("%s: mode %#o has a setuid, setgid or sticky bit", rel, st.Mode)
			case st.Rdev != 0:
				t.Errorf("%s: device number %d", rel, st.Rdev)
			}
			return nil
		})
	})
	if err != nil {
		t.Errorf("walking the mount: %v", err)
	}
	return n
}

// TestNoSpecialModes: in a store written by Theater whose files carry
// setuid, setgid and sticky bits (and with a device node and a FIFO among
// them), no file of the mount shows those bits or is anything but a regular
// file or directory; chmod u+s or +t through the mount is accepted and not
// stored; every mount, --read-only and --allow-other too, has nosuid and
// nodev, and --allow-other brings default_permissions.
func TestNoSpecialModes(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, _ := theaterStore(t, theatertest.Options{Seed: 25, Actors: 2, ChainLength: 3, PlainBlobs: 6})
	hostileModes(t, store)
	for _, flags := range [][]string{nil, {"--read-only"}, {"--allow-other"}} {
		mnt := mountStore(t, store, flags...)
		ms := mountsAt(mnt)
		if len(ms) != 1 {
			t.Fatalf("mounts at %s: %+v", mnt, ms)
		}
		want := []string{"nosuid", "nodev"}
		if slices.Contains(flags, "--allow-other") {
			want = append(want, "allow_other", "default_permissions")
		}
		for _, o := range want {
			if !slices.Contains(ms[0].options, o) {
				t.Errorf("mount %v: /proc/mounts options %q lack %s", flags, ms[0].options, o)
			}
		}
		n := wantPlainModes(t, mnt)
		t.Logf("mount %v: %d files stated, options %s", flags, n, strings.Join(ms[0].options, ","))
		if slices.Contains(flags, "--read-only") {
			unmount(t, mnt)
			continue
		}
		mustSh(t, mnt, "chmod u+s,g+s by-label/notes && chmod +t by-label/team && chmod 6755 by-label/team/beta")
		wantPlainModes(t, mnt)
		unmount(t, mnt)
	}
}

// asNobody runs a script as the user nobody.
func asNobody(t *testing.T, dir, script string) result {
	t.Helper()
	r := runIn(t, cmdTimeout, "/", dir, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", inDir(dir, script))
	r.cmd = "(as nobody) " + script
	return r
}

// TestOtherUsers: without --allow-other another user cannot enter the
// mount at all. With it (and so default_permissions) another user reads
// what the modes allow and changes nothing: labels are 0644 and the
// directories 0755, owned by the mounting user.
func TestOtherUsers(t *testing.T) {
	requireFuse(t)
	if os.Geteuid() != 0 {
		t.Skip("switching to another user needs root")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is not installed")
	}
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 26, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	before := withoutTmp(treeSnapshot(t, store))
	h := m.Labels[theatertest.LabelTeamBeta][0]

	private := mountStore(t, store)
	shared := mountStore(t, store, "--allow-other")
	for _, mnt := range []string{private, shared} {
		// Let nobody reach the mountpoints (t.TempDir makes them 0700).
		for _, d := range []string{filepath.Dir(mnt), filepath.Dir(filepath.Dir(mnt))} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
	}

	for _, p := range []string{"", "by-label", "by-label/notes", "by-hash/" + h} {
		// Not from inside: the shell could not even cd there.
		r := runIn(t, cmdTimeout, "/", private, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", filepath.Join(private, p))
		r.cmd = "(as nobody) " + r.cmd
		if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") {
			t.Errorf("a mount without --allow-other let another user in:\n%s", r)
		}
	}

	if got := asNobody(t, shared, "cat by-label/notes"); got.code != 0 || got.stdout != "note three" {
		t.Errorf("--allow-other: another user cannot read a label:\n%s", got)
	}
	if got := asNobody(t, shared, "ls by-hash"); got.code != 0 || len(lines(got.stdout)) != len(m.Blobs) {
		t.Errorf("--allow-other: another user cannot list by-hash (want %d blobs):\n%s", len(m.Blobs), abbrevResult(got))
	}
	for _, script := range []string{
		"echo x > by-label/notes",
		"echo x >> by-label/notes",
		"echo x > by-label/new",
		"truncate -s 0 by-label/notes",
		"rm by-label/notes",
		"mv by-label/notes by-label/moved",
		"mkdir by-label/ns",
		"rmdir by-label/plain",
		"chmod 666 by-label/notes",
		"touch -d 2001-01-01 by-label/notes",
		"setfattr -n user.x -v 1 by-label/notes",
	} {
		r := asNobody(t, shared, script)
		if r.code == 0 || !strings.Contains(r.stderr, "Permission denied") && !strings.Contains(r.stderr, "Operation not permitted") {
			t.Errorf("--allow-other: another user's change was not refused:\n%s", r)
		}
	}
	if d := diffTrees(before, withoutTmp(treeSnapshot(t, store))); d != "" {
		t.Errorf("another user changed the store: %s", d)
	}
}
