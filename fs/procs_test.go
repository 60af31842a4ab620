package fs

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

// fakeProcs stands in for setProcs: it records what is set, 1 or 0 for
// the runtime's default.
type fakeProcs struct {
	mu  sync.Mutex
	log []int
}

func (f *fakeProcs) set(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, n)
}

func (f *fakeProcs) sets() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.log)
}

// last is what was set last, -1 for nothing yet.
func (f *fakeProcs) last() int {
	if l := f.sets(); len(l) > 0 {
		return l[len(l)-1]
	}
	return -1
}

// waitProcs waits until what was set last is want.
func waitProcs(t *testing.T, f *fakeProcs, want int, what string) {
	t.Helper()
	if msg := eventually(5*time.Second, func() string {
		if f.last() != want {
			return what
		}
		return ""
	}); msg != "" {
		t.Fatalf("%s: set %v, want %d last", msg, f.sets(), want)
	}
}

func TestProcsFollowLoad(t *testing.T) {
	f := &fakeProcs{}
	p := newProcs(f.set)
	p.busyTicks, p.calmTicks = 2, 4
	steps := []struct {
		load float64
		want int // what was set last: 1, or 0 for the default
	}{
		{0.3, 1},  // a cat of small files: the server mostly waits
		{1.0, 1},  // one busy sample is not enough
		{0.7, 1},  // nor a mean of 0.85 over two
		{0.95, 1}, //
		{0.9, 0},  // a mean of 0.925 over two: busy
		{1.7, 0},  //
		{0.2, 0},  // calm is judged over the four samples since the change
		{0.2, 0},  //
		{1.5, 0},  //
	}
	for i, s := range steps {
		p.step(s.load)
		if got := f.last(); got != s.want {
			t.Fatalf("step %d (load %.2f): set %v, want %d last", i, s.load, f.sets(), s.want)
		}
	}
	p.step(0.5)
	if got := f.last(); got != 1 {
		t.Fatalf("a mean of 0.6 over four samples: set %v, want 1 last", f.sets())
	}
	// Exactly idleLoad is not calm; exactly busyLoad is busy.
	for range 2 {
		p.step(busyLoad)
	}
	if got := f.last(); got != 0 {
		t.Fatalf("a mean of exactly busyLoad: set %v, want 0 last", f.sets())
	}
	for range 4 {
		p.step(idleLoad)
	}
	if got := f.last(); got != 0 {
		t.Fatalf("a mean of exactly idleLoad: set %v, want 0 last", f.sets())
	}
	if want := []int{1, 0, 1, 0}; !slices.Equal(f.sets(), want) {
		t.Fatalf("set %v, want %v: each change once", f.sets(), want)
	}
}

// run samples the process's CPU time: a burst of use gives the default
// Ps, calm one, and stopping gives the default back.
func TestProcsRun(t *testing.T) {
	f := &fakeProcs{}
	p := newProcs(f.set)
	const tick = 5 * time.Millisecond
	var used atomic.Int64 // nanoseconds of CPU
	var busy atomic.Bool
	p.usage = func() time.Duration {
		if busy.Load() {
			used.Add(int64(2 * tick)) // two CPUs' worth a sample, or more if ticks are late
		}
		return time.Duration(used.Load())
	}
	p.busyTicks, p.calmTicks = 2, 4
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { p.run(stop, tick); close(done) }()

	busy.Store(true)
	waitProcs(t, f, 0, "while the process is busy")
	busy.Store(false)
	waitProcs(t, f, 1, "once it is calm")
	close(stop)
	<-done
	if got := f.last(); got != 0 {
		t.Fatalf("after run stopped: set %v, want the default (0) last", f.sets())
	}
}

// A mount with AdaptiveProcs starts on one P and gives the runtime its
// default back when it ends; a mount that fails sets nothing.
func TestMountAdaptiveProcs(t *testing.T) {
	f := &fakeProcs{}
	m := mountStore(t, MountOptions{AdaptiveProcs: true, setProcs: f.set})
	if got := f.sets(); len(got) == 0 || got[0] != 1 {
		t.Fatalf("mounted: set %v, want 1 first", got)
	}
	writeFile(t, m.label("note"), "hello\n")
	m.unmount()
	waitProcs(t, f, 0, "after unmount")

	failed := &fakeProcs{}
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := mount("/nonexistent/mountpoint", st, MountOptions{AdaptiveProcs: true, setProcs: failed.set}); err == nil {
		t.Fatal("mount on a missing directory succeeded")
	}
	if got := failed.sets(); len(got) != 0 {
		t.Fatalf("a failed mount set %v, want nothing", got)
	}
}
