package integration

import (
	"crypto/rand"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// smallDisk mounts a tmpfs of size (e.g. "8m") in a temporary directory,
// unmounted when the test ends (after the mounts made on it later).
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size); err != nil {
		t.Fatalf("mount -t tmpfs -o size=%s: %v", size, err)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v; detaching", dir, err)
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})
	return dir
}

// blobNames lists data/.
func blobNames(t *testing.T, store string) []string {
	t.Helper()
	return slices.Sorted(maps.Keys(readStore(t, store).blobs))
}

// TestFullDisk: on a store whose disk is full, a write through the mount
// fails with ENOSPC ("No space left on device") and changes nothing: the
// label keeps its content, no partial blob appears in data/, tmp/ is
// cleaned; the server keeps serving, and writes work again once there is
// room.
func TestFullDisk(t *testing.T) {
	requireFuse(t)
	disk := smallDisk(t, "8m")
	t.Parallel()
	store := filepath.Join(disk, "store")
	if err := os.Mkdir(store, 0o755); err != nil {
		t.Fatal(err)
	}
	mnt := mountStore(t, store)
	// cp, not echo: see TestNewLabelRedirectCommitsOnlyFinalContent.
	before := []byte("before\n")
	src := filepath.Join(t.TempDir(), "before")
	if err := os.WriteFile(src, before, 0o644); err != nil {
		t.Fatal(err)
	}
	mustSh(t, mnt, "cp "+q(src)+" by-label/x")
	blobs := blobNames(t, store)
	if !slices.Equal(blobs, []string{sha1Hex(before)}) {
		t.Fatalf("data/ holds %q, want only the blob of %q", blobs, before)
	}

	big := filepath.Join(t.TempDir(), "big")
	b := make([]byte, 20<<20)
	rand.Read(b)
	if err := os.WriteFile(big, b, 0o644); err != nil {
		t.Fatal(err)
	}
	shFails(t, mnt, "cp "+q(big)+" by-label/x", "No space left on device")
	wantLabelContent(t, mnt, store, "x", before) // tmp/ holds only verified, too
	// What the failed write left behind, removed after the check so that
	// the rest of the test sees a disk with room.
	partial := func(when string) {
		t.Helper()
		for _, h := range blobNames(t, store) {
			if slices.Contains(blobs, h) {
				continue
			}
			fi, _ := os.Stat(filepath.Join(store, "data", h))
			t.Errorf("%s: a blob nobody wrote whole appeared in data/: %s (%d bytes)", when, h, fi.Size())
			// Whatever it is, the mount must not serve it unless it
			// hashes to its name.
			if got, err := readThrough(t, filepath.Join(mnt, "by-hash", h)); err == nil && sha1Hex(got) != h {
				t.Errorf("%s: the mount serves by-hash/%s: %d bytes hashing to %s, not to its name", when, h, len(got), sha1Hex(got))
			}
			os.Remove(filepath.Join(store, "data", h))
		}
	}
	partial("cp of 20 MiB onto an 8 MiB disk")

	// The server keeps serving.
	if got := catFile(t, mnt, "by-label/x"); got != string(before) {
		t.Errorf("cat by-label/x after ENOSPC = %q", got)
	}
	mustSh(t, mnt, "ls -l by-hash by-label >/dev/null")

	// A disk filled by someone else: a small write fails the same way.
	filler := filepath.Join(disk, "filler")
	sh(t, "/", "dd if=/dev/zero of="+q(filler)+" bs=64k status=none") // until full
	shFails(t, mnt, "cp /etc/hostname by-label/x", "No space left on device")
	wantLabelContent(t, mnt, store, "x", before)
	partial("a small cp onto a full disk")

	// Room again: writes work.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	mustSh(t, mnt, "echo small > by-label/x && echo new > by-label/y")
	wantLabelContent(t, mnt, store, "x", []byte("small\n"))
	wantLabelContent(t, mnt, store, "y", []byte("new\n"))
	mustFsck(t, store)
}
