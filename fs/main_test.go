package fs

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// liveMounts holds every mount a test has made and not yet unmounted.
var liveMounts sync.Map // *mounted -> struct{}

// TestMain arms a watchdog: a test blocked in a system call on a mount
// whose server deadlocked cannot be interrupted, and the process could not
// even exit, so shortly before go test's -timeout every live mount's FUSE
// connection is aborted. The blocked calls then fail with ENOTCONN and the
// timeout's stack dump shows where the server was stuck.
func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, ok := f.Value.(flag.Getter).Get().(time.Duration); ok && d > 0 {
			grace := min(d/10, 30*time.Second)
			time.AfterFunc(d-grace, func() {
				liveMounts.Range(func(k, _ any) bool {
					mt := k.(*mounted)
					fmt.Fprintf(os.Stderr, "fs tests: -timeout near; aborting the FUSE connection of %s\n", mt.mnt)
					mt.abort()
					return true
				})
			})
		}
	}
	os.Exit(m.Run())
}

// abort cuts the mount's FUSE connection (umount -f does it through the
// kernel's umount_begin, even when the unmount itself then fails): every
// request in flight, and every one after, fails with ENOTCONN.
func (m *mounted) abort() {
	syscall.Unmount(m.mnt, syscall.MNT_FORCE)
}

// watchdog aborts the mount and fails the test unless stop is called
// within d: a deadlocked server must fail the test, not hang it.
func (m *mounted) watchdog(d time.Duration, what string) (stop func()) {
	t := m.t
	timer := time.AfterFunc(d, func() {
		t.Errorf("%s: not done after %v; the server looks deadlocked; aborting its FUSE connection. "+
			"The file system's goroutines:\n%s", what, d, fsGoroutines())
		m.aborted.Store(true)
		m.abort()
	})
	return func() { timer.Stop() }
}

// fsGoroutines returns the stacks of the goroutines that are inside this
// package's non-test code.
func fsGoroutines() string {
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "theater-storefs/fs.(*") && !strings.Contains(g, "_test.go") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}
