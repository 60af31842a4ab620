package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// bin is the theater-storefs binary TestMain built for this run.
var bin string

// skipReason is set when FUSE cannot be used here; every test skips with it.
var skipReason string

// mountpoints records every mountpoint a test used, so that TestMain can
// make sure none is left mounted.
var mountpoints struct {
	sync.Mutex
	all []string
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helper())
	}
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	skipReason = fuseUnavailable()
	tmp, err := os.MkdirTemp("", "theater-storefs-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	if skipReason == "" {
		bin = filepath.Join(tmp, "theater-storefs")
		if err := build(bin); err != nil {
			fmt.Fprintln(os.Stderr, "integration: building theater-storefs:", err)
			return 1
		}
		// The server runs as os.Executable(), the resolved path: match it.
		if bin, err = filepath.EvalSymlinks(bin); err != nil {
			fmt.Fprintln(os.Stderr, "integration:", err)
			return 1
		}
	}
	code := m.Run()
	if left := leftMounts(); len(left) > 0 {
		fmt.Fprintf(os.Stderr, "integration: FAIL: mounts left behind: %s (lazily unmounted now)\n", strings.Join(left, ", "))
		for _, p := range left {
			if os.Geteuid() == 0 {
				syscall.Unmount(p, syscall.MNT_DETACH)
			} else {
				exec.Command("fusermount3", "-u", "-z", p).Run()
			}
		}
		return 1
	}
	return code
}

// fuseUnavailable says why FUSE cannot be used here, or "" when it can.
func fuseUnavailable() string {
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		return fmt.Sprintf("FUSE is unavailable: cannot open /dev/fuse (%v)", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return "FUSE is unavailable: not root and no fusermount3 in PATH"
		}
	}
	for _, tool := range []string{"sh", "getfattr", "setfattr", "dd", "sed", "truncate", "cmp", "stat", "umount"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("tool %s is missing (install coreutils, sed, attr)", tool)
		}
	}
	return ""
}

// build compiles the repository's main package (the parent directory) into
// out.
func build(out string) error {
	root, err := filepath.Abs("..")
	if err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("repository root not found: %w", err)
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v\n%s", err, b)
	}
	return nil
}

// leftMounts lists the recorded mountpoints that are still mounted.
func leftMounts() []string {
	mountpoints.Lock()
	defer mountpoints.Unlock()
	var left []string
	for _, p := range mountpoints.all {
		if isMounted(p) {
			left = append(left, p)
		}
	}
	return left
}

func requireFuse(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
