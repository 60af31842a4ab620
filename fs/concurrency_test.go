package fs

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestLabelStatDuringRelease: stat(2) of a label while writers of the same
// label close. Getattr looks through the node's writers (node lock, then
// each handle's lock) while Release of a writer takes its handle's lock,
// then the node's: the two must not deadlock. The writers reopen the
// inode the stat'ing descriptor holds, through /proc/self/fd, so that all
// of it happens on one node whatever the change feed does to the entry.
func TestLabelStatDuringRelease(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{})
	m.setLabel("x", "start")
	r, err := os.Open(m.label("x"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	same := fmt.Sprintf("/proc/self/fd/%d", r.Fd())

	stop := m.watchdog(5*time.Second, "writers closing while stat'ers stat")
	defer stop()
	deadline := time.Now().Add(1500 * time.Millisecond)
	var wg sync.WaitGroup
	var writes, stats atomic.Int64
	var mu sync.Mutex
	var firstErr error
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if firstErr == nil {
			firstErr = err
		}
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline); i++ {
				f, err := os.OpenFile(same, os.O_WRONLY|os.O_TRUNC, 0)
				if err != nil {
					fail(err)
					return
				}
				f.WriteString(fmt.Sprintf("writer %d, round %d", w, i))
				f.Close()
				writes.Add(1)
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var stx unix.Statx_t
			for time.Now().Before(deadline) {
				// FORCE_SYNC: ask the file system, not the kernel's
				// cache.
				if err := unix.Statx(int(r.Fd()), "", unix.AT_EMPTY_PATH|unix.AT_STATX_FORCE_SYNC, unix.STATX_SIZE, &stx); err != nil {
					fail(err)
					return
				}
				stats.Add(1)
			}
		}()
	}
	wg.Wait()
	stop()
	if firstErr != nil {
		t.Errorf("during the run: %v", firstErr)
	}
	t.Logf("%d writes closed, %d stats", writes.Load(), stats.Load())
}
