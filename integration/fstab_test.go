package integration

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// TestFstabStyleMount mounts as /etc/fstab does, through mount(8) and
// mount.fuse3 (`PROGRAM#STORE MNT fuse OPTIONS`), and checks that the
// options arrive, the mount answers, and umount ends the server.
func TestFstabStyleMount(t *testing.T) {
	requireFuse(t)
	if os.Geteuid() != 0 {
		t.Skip("mount(8) with a fuse type needs root here")
	}
	store, _ := theaterStore(t, theatertest.Options{Seed: 7})
	mnt := newMountpoint(t)
	res := run(t, "", "mount", "-t", "fuse", bin+"#"+store, mnt, "-o", "ro,allow_other")
	if res.code != 0 {
		t.Fatalf("mount -t fuse failed: %s", res)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	if got := mountFsType(mnt); got != "fuse.theater-storefs" {
		t.Errorf("type at %s = %q, want fuse.theater-storefs", mnt, got)
	}
	var opts []string
	for _, m := range mountsAt(mnt) {
		opts = m.options
	}
	for _, want := range []string{"ro", "allow_other", "default_permissions", "nosuid", "nodev"} {
		if !slices.Contains(opts, want) {
			t.Errorf("mount options %q lack %s", opts, want)
		}
	}
	if _, err := os.ReadDir(filepath.Join(mnt, "by-label")); err != nil {
		t.Fatalf("ls by-label: %v", err)
	}
	pid := serverPID(t, mnt)
	if res := run(t, "", "umount", mnt); res.code != 0 {
		t.Fatalf("umount failed: %s", res)
	}
	if !waitExit(pid, 5*time.Second) {
		t.Errorf("server %d still running after umount", pid)
	}
}
