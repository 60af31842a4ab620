package fs

import (
	"bytes"
	"errors"
	"fmt"
	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
	"golang.org/x/sys/unix"
)

// bigContent is deterministic content of n bytes that is not all one byte.
func bigContent(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24)
	}
	return b
}

func TestByHashListStatRead(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	contents := map[store.Hash][]byte{}
	for _, c := range [][]byte{[]byte("hello"), nil, []byte("world\n"), bigContent(3<<20+17, 1)} {
		h, err := m.st.Store(bg, c)
		if err != nil {
			t.Fatal(err)
		}
		contents[h] = c
	}

	var want []string
	for h := range contents {
		want = append(want, h.String())
	}
	slices.Sort(want)
	if got := dirNames(t, m.path("by-hash")); !slices.Equal(got, want) {
		t.Errorf("by-hash/ lists %q, want %q in that order", got, want)
	}

	for h, c := range contents {
		p := m.blob(h)
		// Stat before anything reads the file.
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("Stat(%s): %v", p, err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 {
			t.Errorf("%s: mode %v, want a regular file with mode 0444", h, fi.Mode())
		}
		if fi.Size() != int64(len(c)) {
			t.Errorf("%s: size %d, want %d", h, fi.Size(), len(c))
		}
		dataFi, err := os.Stat(filepath.Join(m.dir, store.DataDir, h.String()))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(dataFi.ModTime()) {
			t.Errorf("%s: mtime %v, want the blob file's %v", h, fi.ModTime(), dataFi.ModTime())
		}
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != uint32(os.Getuid()) || st.Gid != uint32(os.Getgid()) {
			t.Errorf("%s: owner %d:%d, want the mounting user %d:%d", h, st.Uid, st.Gid, os.Getuid(), os.Getgid())
		}
		if st.Ino != blobIno(h) {
			t.Errorf("%s: inode %#x, want blobIno %#x", h, st.Ino, blobIno(h))
		}

		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("ReadFile(%s): %v", p, err)
		}
		if !bytes.Equal(got, c) {
			t.Errorf("%s: read %d bytes, want its %d bytes of content", h, len(got), len(c))
		}
		// Read again: served from the kernel's cache or the file, the
		// same bytes.
		if got2, err := os.ReadFile(p); err != nil || !bytes.Equal(got2, c) {
			t.Errorf("%s: second read: %d bytes, err %v", h, len(got2), err)
		}
	}

	// A pread in the middle of the big blob.
	for h, c := range contents {
		if len(c) < 1<<20 {
			continue
		}
		f, err := os.Open(m.blob(h))
		if err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4096)
		off := int64(len(c) - 3000)
		n, err := f.ReadAt(buf, off)
		f.Close()
		if n != 3000 || !bytes.Equal(buf[:n], c[off:]) {
			t.Errorf("ReadAt(%d) near the end: %d bytes, err %v", off, n, err)
		}
	}
}

func TestByHashDirAttributes(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	for _, d := range []string{"", "by-hash", "by-label", "actors"} {
		fi, err := os.Stat(m.path(d))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.IsDir() {
			t.Errorf("%q is not a directory: %v", d, fi.Mode())
		}
	}
	if got := dirNames(t, m.mnt); !slices.Equal(sortedStrings(got), []string{".theater", "actors", "by-hash", "by-label"}) {
		t.Errorf("the mount's top lists %q", got)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.mnt, &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	} else if sfs.Namelen != store.MaxComponentLen {
		t.Errorf("statfs: name length %d, want %d", sfs.Namelen, store.MaxComponentLen)
	}
}

// mountOptions returns the mount's options and super options from
// /proc/self/mountinfo, and its source.
func mountOptions(t *testing.T, mnt string) (opts []string, source string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 10 || f[4] != mnt {
			continue
		}
		sep := slices.Index(f, "-")
		if sep < 0 || len(f) < sep+4 {
			continue
		}
		opts = append(strings.Split(f[5], ","), strings.Split(f[sep+3], ",")...)
		return opts, f[sep+2]
	}
	t.Fatalf("%s is not in /proc/self/mountinfo", mnt)
	return nil, ""
}

func TestMountOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mo     MountOptions
		want   []string
		unwant []string
	}{
		{"default", MountOptions{}, []string{"rw", "nosuid", "nodev"}, []string{"allow_other", "default_permissions", "ro"}},
		{"read-only", MountOptions{Options: Options{ReadOnly: true}}, []string{"ro", "nosuid", "nodev"}, nil},
		// allow_other without default_permissions would let every user
		// past every permission check.
		{"allow-other", MountOptions{AllowOther: true}, []string{"allow_other", "default_permissions"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := mountStore(t, tt.mo)
			opts, source := mountOptions(t, m.mnt)
			for _, o := range tt.want {
				if !slices.Contains(opts, o) {
					t.Errorf("mount options %q lack %s", opts, o)
				}
			}
			for _, o := range tt.unwant {
				if slices.Contains(opts, o) {
					t.Errorf("mount options %q have %s", opts, o)
				}
			}
			if source != m.dir {
				t.Errorf("mount source %q, want the store directory %q", source, m.dir)
			}
		})
	}
}

func TestByHashNewBlobAppears(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	if names := dirNames(t, m.path("by-hash")); len(names) != 0 {
		t.Fatalf("empty store lists %q", names)
	}
	h := shaStr("late")
	if _, err := os.Stat(m.blob(h)); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("Stat of a blob not stored yet: %v, want ENOENT", err)
	}
	m.put("late")
	// Negative entries are not cached: it shows at once.
	if got := readFile(t, m.blob(h)); got != "late" {
		t.Errorf("read %q, want %q", got, "late")
	}
	if names := dirNames(t, m.path("by-hash")); !slices.Equal(names, []string{h.String()}) {
		t.Errorf("by-hash/ lists %q, want %s", names, h)
	}
}

func TestByHashNotAHash(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.put("hello")
	hex := h.String()
	for _, name := range []string{
		"XYZ",
		strings.ToUpper(hex),
		hex[:39],
		hex + "0",
		hex[:39] + "g",
		"store:hash:" + hex,
		shaStr("never stored").String(), // a hash, but not in the store
	} {
		if _, err := os.Stat(m.path("by-hash", name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("Stat(by-hash/%s): %v, want ENOENT", name, err)
		}
		if _, err := os.ReadFile(m.path("by-hash", name)); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("ReadFile(by-hash/%s): %v, want ENOENT", name, err)
		}
	}
}

func TestByHashXattr(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.put("hello")
	p := m.blob(h)

	// Size probe, then the value.
	n, err := unix.Getxattr(p, xattrHash, nil)
	if err != nil || n != 40 {
		t.Fatalf("Getxattr(%s) size probe = %d, %v; want 40", xattrHash, n, err)
	}
	buf := make([]byte, 64)
	n, err = unix.Getxattr(p, xattrHash, buf)
	if err != nil || string(buf[:n]) != h.String() {
		t.Errorf("Getxattr(%s) = %q, %v; want %s", xattrHash, buf[:n], err, h)
	}
	_, err = unix.Getxattr(p, xattrHash, make([]byte, 10))
	wantErrno(t, "Getxattr into a 10-byte buffer", err, syscall.ERANGE)

	for _, attr := range []string{"user.other", xattrRefs} {
		_, err := unix.Getxattr(p, attr, buf)
		wantErrno(t, "Getxattr("+attr+")", err, syscall.ENODATA)
	}
	// No security labels, capabilities or ACLs: those namespaces are not
	// supported at all, rather than empty.
	for _, attr := range []string{"security.capability", "security.selinux", "trusted.x", "system.posix_acl_access"} {
		_, err := unix.Getxattr(p, attr, buf)
		wantErrno(t, "Getxattr("+attr+")", err, syscall.ENOTSUP)
	}

	n, err = unix.Listxattr(p, nil)
	if err != nil {
		t.Fatalf("Listxattr size probe: %v", err)
	}
	list := make([]byte, n)
	n, err = unix.Listxattr(p, list)
	if err != nil {
		t.Fatalf("Listxattr: %v", err)
	}
	if names := strings.Split(strings.TrimSuffix(string(list[:n]), "\x00"), "\x00"); !slices.Contains(names, xattrHash) {
		t.Errorf("Listxattr = %q, want %s in it", names, xattrHash)
	}
}

// TestByHashRefusesChanges: every change in by-hash/ is EACCES.
func TestByHashRefusesChanges(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	h := m.put("hello")
	other := m.put("other")
	m.setLabel("x", "label content")
	p := m.blob(h)
	newHash := m.blob(shaStr("not stored"))
	refusals := refusalCases(m, p, newHash, other)
	for _, r := range refusals {
		wantErrno(t, r.name, r.do(), syscall.EACCES)
	}
	// Nothing changed.
	if got := readFile(t, p); got != "hello" {
		t.Errorf("blob content now %q", got)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o444 {
		t.Errorf("blob after the attempts: %v, %v", fi, err)
	}
	hashes, err := m.st.ListAllContent(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := []store.Hash{h, other, shaStr("label content")}
	slices.SortFunc(want, func(a, b store.Hash) int { return bytes.Compare(a[:], b[:]) })
	if !slices.Equal(hashes, want) {
		t.Errorf("store holds %v after the attempts, want %v", hashes, want)
	}
	m.wantLabel("x", "label content")
}

type refusal struct {
	name string
	do   func() error
}

// refusalCases lists every way to try to change by-hash/: p is a stored
// blob, newPath a by-hash/ name not stored, other another stored blob.
func refusalCases(m *mounted, p, newPath string, other store.Hash) []refusal {
	dir := m.path("by-hash")
	openErr := func(path string, flag int) func() error {
		return func() error {
			f, err := os.OpenFile(path, flag, 0o644)
			if err == nil {
				f.Close()
			}
			return err
		}
	}
	return []refusal{
		{"WriteFile(existing)", func() error { return os.WriteFile(p, []byte("x"), 0o644) }},
		{"WriteFile(new)", func() error { return os.WriteFile(newPath, []byte("x"), 0o644) }},
		{"WriteFile(new, not a hash)", func() error { return os.WriteFile(filepath.Join(dir, "name"), []byte("x"), 0o644) }},
		{"open O_WRONLY", openErr(p, os.O_WRONLY)},
		{"open O_RDWR", openErr(p, os.O_RDWR)},
		{"open O_WRONLY|O_APPEND", openErr(p, os.O_WRONLY|os.O_APPEND)},
		{"open O_RDONLY|O_TRUNC", openErr(p, os.O_RDONLY|os.O_TRUNC)},
		{"open O_CREATE|O_EXCL", openErr(newPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL)},
		{"Truncate", func() error { return os.Truncate(p, 0) }},
		{"Remove", func() error { return os.Remove(p) }},
		{"Rename within by-hash", func() error { return os.Rename(p, newPath) }},
		{"Rename over another blob", func() error { return os.Rename(p, m.blob(other)) }},
		{"Mkdir", func() error { return os.Mkdir(filepath.Join(dir, "d"), 0o755) }},
		{"Chmod", func() error { return os.Chmod(p, 0o644) }},
		{"Chmod by-hash/", func() error { return os.Chmod(dir, 0o777) }},
		{"Chown", func() error { return os.Chown(p, 1, 1) }},
		{"Chtimes", func() error { return os.Chtimes(p, time.Unix(1, 0), time.Unix(1, 0)) }},
		{"Link", func() error { return os.Link(p, newPath) }},
		{"Symlink", func() error { return os.Symlink("target", filepath.Join(dir, "s")) }},
		{"Mknod", func() error { return syscall.Mknod(filepath.Join(dir, "fifo"), syscall.S_IFIFO|0o644, 0) }},
		{"Setxattr", func() error { return syscall.Setxattr(p, "user.x", []byte("v"), 0) }},
		{"Setxattr of the hash", func() error { return syscall.Setxattr(p, xattrHash, []byte("v"), 0) }},
		{"Removexattr", func() error { return syscall.Removexattr(p, xattrHash) }},
	}
}

// TestByHashCorruptBlob: a blob whose content does not hash to its name
// (Theater writes in place; a crash tears it, or leaves it empty) reads as
// EIO, large or small; the empty content itself reads as empty.
func TestByHashCorruptBlob(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(filepath.Join(dir, store.DataDir), 0o755); err != nil {
		t.Fatal(err)
	}
	torn, cut, big, empty := shaStr("the real content"), shaStr("content lost in a crash"), shaStr("big"), shaStr("")
	for h, b := range map[store.Hash][]byte{
		torn:  []byte("torn real content"),
		cut:   nil,
		big:   bigContent(passthroughMin+1, 3),
		empty: nil,
	} {
		if err := os.WriteFile(filepath.Join(dir, store.DataDir, h.String()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m := mountDir(t, dir, MountOptions{})
	for name, h := range map[string]store.Hash{"torn": torn, "cut to nothing": cut, "large": big} {
		if b, err := os.ReadFile(m.blob(h)); !errors.Is(err, syscall.EIO) {
			t.Errorf("reading a corrupt blob (%s): %d bytes, %v; want EIO", name, len(b), err)
		}
		if !strings.Contains(m.logs.String(), h.String()) {
			t.Errorf("no log line names the corrupt blob %s (%s); log:\n%s", h, name, m.logs)
		}
	}
	if b, err := os.ReadFile(m.blob(empty)); err != nil || len(b) != 0 {
		t.Errorf("reading the empty blob: %q, %v", b, err)
	}
}

// TestLsLongAsksOnce: ls -l probes every file for a security label and an
// ACL. The mount answers those namespaces ENOTSUP, so ls stops asking
// after the first file instead of costing two round trips a file.
func TestLsLongAsksOnce(t *testing.T) {
	t.Parallel()
	ls, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("no ls")
	}
	stats := NewStats()
	m := mountStore(t, MountOptions{Stats: stats})
	const n = 200
	for i := range n {
		m.put(fmt.Sprintf("blob %d", i))
	}
	before := stats.Snapshot().Ops["getxattr"].Count
	out, err := exec.Command(ls, "-l", "--color=never", m.path("by-hash")).CombinedOutput()
	if err != nil {
		t.Fatalf("ls -l: %v\n%s", err, out)
	}
	if lines := strings.Count(string(out), "\n"); lines != n+1 { // and "total"
		t.Errorf("ls -l printed %d lines, want %d:\n%s", lines, n+1, out)
	}
	if asked := stats.Snapshot().Ops["getxattr"].Count - before; asked > 4 {
		t.Errorf("ls -l of %d files made %d getxattr requests, want at most 4", n, asked)
	}
}

// TestByHashInodesBounded: listing by-hash/ with attributes (readdirplus)
// gives the kernel an inode for every blob, and the server a node for
// each; beyond the limit the oldest entries are invalidated, so the kernel
// forgets them and the server's nodes stay bounded. Every blob still
// reads.
func TestByHashInodesBounded(t *testing.T) {
	t.Parallel()
	// 50 of 400, and none at all: with nothing allowed, readdirplus gives
	// no inode, and each entry is looked up, then forgotten.
	for _, limit := range []int{50, 0} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) { testInodesBounded(t, limit) })
	}
}

func testInodesBounded(t *testing.T, limit int) {
	m := mountStore(t, MountOptions{})
	const n = 400
	byHash := m.root.byHash
	byHash.Operations().(*byHashDir).leaves.setLimit(limit)
	var hashes []store.Hash
	for i := range n {
		hashes = append(hashes, m.put(fmt.Sprintf("blob %d", i)))
	}
	entries, err := os.ReadDir(m.path("by-hash"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("by-hash/ lists %d entries, want %d", len(entries), n)
	}
	for _, e := range entries {
		if _, err := os.Lstat(m.path("by-hash", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	wantHeld(t, byHash, limit, fmt.Sprintf("after listing %d blobs", n))
	for i, h := range hashes {
		got, err := os.ReadFile(m.blob(h))
		if err != nil || string(got) != fmt.Sprintf("blob %d", i) {
			t.Fatalf("reading %s: %q, %v", h, got, err)
		}
	}
}

// TestByHashSeekdir: a listing of by-hash/ can be rewound and resumed at
// an offset telldir gave (rm -r and Python's os.listdir on a reused handle
// do the first; seekdir(3) users the second).
func TestByHashSeekdir(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	const n = 300 // more than one readdir reply holds
	for i := range n {
		m.put(fmt.Sprintf("blob %d", i))
	}
	fd, err := syscall.Open(m.path("by-hash"), syscall.O_RDONLY|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	// names reads entries from fd until the end, with the offset (d_off)
	// after each.
	names := func() (list []string, offs []int64) {
		buf := make([]byte, 4096)
		for {
			k, err := syscall.Getdents(fd, buf)
			if err != nil {
				t.Fatal(err)
			}
			if k == 0 {
				return list, offs
			}
			for b := buf[:k]; len(b) > 0; {
				reclen := int(b[16]) | int(b[17])<<8
				off := int64(0)
				for i := 7; i >= 0; i-- {
					off = off<<8 | int64(b[8+i])
				}
				name := string(bytes.TrimRight(b[19:reclen], "\x00"))
				if name != "." && name != ".." {
					list, offs = append(list, name), append(offs, off)
				}
				b = b[reclen:]
			}
		}
	}
	first, offs := names()
	if len(first) != n {
		t.Fatalf("listed %d entries, want %d", len(first), n)
	}
	if _, err := syscall.Seek(fd, 0, 0); err != nil {
		t.Fatal(err)
	}
	if again, _ := names(); !slices.Equal(again, first) {
		t.Fatalf("after rewinding, listed %d entries, not the same %d", len(again), len(first))
	}
	const k = 123
	if _, err := syscall.Seek(fd, offs[k], 0); err != nil {
		t.Fatal(err)
	}
	if rest, _ := names(); !slices.Equal(rest, first[k+1:]) {
		t.Fatalf("after seeking to the offset of entry %d, listed %d entries, want the %d after it", k, len(rest), n-k-1)
	}
}

// wantHeld waits until the server holds at most limit nodes under dir:
// the kernel forgets invalidated entries asynchronously.
func wantHeld(t *testing.T, dir *fusefs.Inode, limit int, when string) {
	t.Helper()
	var held int
	deadline := time.Now().Add(5 * time.Second)
	for {
		held = len(dir.Children())
		if held <= limit || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if held > limit {
		t.Errorf("the server holds %d blob nodes %s, want at most %d", held, when, limit)
	}
}

// TestByHashInodesBoundedUnderReuse: entries looked up again while their
// nodes live on (held open, or invalidated and not yet forgotten) are
// queued again, so the bound holds for them too.
func TestByHashInodesBoundedUnderReuse(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	const limit, n, open = 5, 200, 10
	byHash := m.root.byHash
	byHash.Operations().(*byHashDir).leaves.setLimit(limit)
	var hashes []store.Hash
	for i := range n {
		hashes = append(hashes, m.put(fmt.Sprintf("blob %d", i)))
	}
	var files []*os.File
	for _, h := range hashes[:open] {
		f, err := os.Open(m.blob(h))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	// Two listers at once: each looks up entries the other's lookups
	// invalidated moments ago.
	var wg sync.WaitGroup
	stop := time.Now().Add(time.Second)
	for range 2 {
		wg.Go(func() {
			for time.Now().Before(stop) {
				entries, err := os.ReadDir(m.path("by-hash"))
				if err != nil {
					t.Error(err)
					return
				}
				for _, e := range entries {
					if _, err := os.Lstat(m.path("by-hash", e.Name())); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	// The open ones again, their old nodes alive.
	for i, f := range files {
		if _, err := os.Stat(m.blob(hashes[i])); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	wantHeld(t, byHash, limit, "after two listers and reopened entries")
}
