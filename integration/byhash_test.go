package integration

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// TestByHashRefusesChanges: every change in by-hash/ fails with "Permission
// denied" (EACCES) and changes nothing; names that are not 40 lowercase hex
// characters do not exist.
func TestByHashRefusesChanges(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 3, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	mnt := mountStore(t, store)
	before := withoutTmp(treeSnapshot(t, store))

	h := m.Labels[theatertest.LabelTeamBeta][0] // "beta"
	missing := sha1Hex([]byte("not in the store"))
	p := "by-hash/" + h
	for _, script := range []string{
		"echo x > " + p,
		"echo x >> " + p,
		"echo x > by-hash/" + missing,
		"touch " + p,
		"touch by-hash/" + missing,
		"truncate -s 0 " + p,
		"printf x | dd of=" + p + " conv=notrunc status=none",
		"rm " + p,
		"rm -f " + p,
		"mv " + p + " by-hash/" + missing,
		"mv " + p + " by-label/stolen",
		"echo x > by-label/mine && mv by-label/mine " + p,
		"mkdir by-hash/dir",
		"mkdir by-hash/" + missing,
		"chmod 600 " + p,
		"chmod 700 by-hash",
		"chown 1:1 " + p,
		"ln " + p + " by-hash/" + missing,
		"ln -s " + p + " by-hash/" + missing,
		"setfattr -n user.x -v 1 " + p,
		"setfattr -x user.theater.hash " + p,
	} {
		shFails(t, mnt, script, "Permission denied")
	}
	// Invalid names are simply not there.
	for _, name := range []string{"XYZ", strings.ToUpper(h), h[:39], h + "0", h + ".txt", "-" + h[1:]} {
		shFails(t, mnt, "cat by-hash/"+q(name), "No such file or directory")
		shFails(t, mnt, "stat by-hash/"+q(name), "No such file or directory")
	}
	shFails(t, mnt, "cat by-hash/"+missing, "No such file or directory")

	// Nothing changed: the blob reads the same and the store is as written.
	if got := catFile(t, mnt, p); got != "beta" {
		t.Errorf("cat %s = %q after the refused changes", p, got)
	}
	if got := statFile(t, mnt, "%a %s", p); got != "444 4" {
		t.Errorf("stat %s = %q, want mode 444 and size 4", p, got)
	}
	mustSh(t, mnt, "rm by-label/mine")
	checkStore(t, store)
	after := withoutTmp(treeSnapshot(t, store))
	// by-label/mine came and went: only its blob is new.
	delete(after, filepath.Join("data", sha1Hex([]byte("x\n"))))
	if d := diffTrees(before, after); d != "" {
		t.Errorf("refused changes changed the store: %s", d)
	}
	mustFsck(t, store)
}

// TestByHashRenameRefused: rename(2) into or out of by-hash/ is refused
// with EACCES, as every other change there. EXDEV would be wrong: it tells
// mv to fall back to copying, and says nothing about why.
func TestByHashRenameRefused(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store, m := theaterStore(t, theatertest.Options{Seed: 4, Actors: 1, ChainLength: 2, PlainBlobs: 2})
	mnt := mountStore(t, store)
	h := m.Labels[theatertest.LabelTeamBeta][0]
	missing := sha1Hex([]byte("not in the store"))
	mustSh(t, mnt, "echo x > by-label/mine")
	for _, r := range [][2]string{
		{"by-hash/" + h, "by-label/out"},
		{"by-hash/" + h, "by-hash/" + missing},
		{"by-label/mine", "by-hash/" + h},
		{"by-label/mine", "by-hash/" + missing},
	} {
		err := within(t, 10*time.Second, func() error {
			return os.Rename(filepath.Join(mnt, r[0]), filepath.Join(mnt, r[1]))
		})
		if !errors.Is(err, syscall.EACCES) {
			t.Errorf("rename(%s, %s) = %v, want EACCES", r[0], r[1], err)
		}
	}
	if got := catFile(t, mnt, "by-label/mine"); got != "x\n" {
		t.Errorf("by-label/mine = %q after refused renames", got)
	}
	st := checkStore(t, store)
	st.wantLabel(t, "mine", []byte("x\n"))
	st.wantNoLabel(t, "out")
}

// within runs f (a system call on the mount from this process), failing the
// test if it does not return within d: a hung mount must not hang the run.
func within(t *testing.T, d time.Duration, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("a system call on the mount did not return within %v", d)
		return nil
	}
}
