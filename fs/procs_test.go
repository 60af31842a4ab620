package fs

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeProcs stands in for runtime.GOMAXPROCS: it records what is set.
type fakeProcs struct {
	mu  sync.Mutex
	n   int
	log []int
}

func (f *fakeProcs) set(n int) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	old := f.n
	if n > 0 {
		f.n = n
		f.log = append(f.log, n)
	}
	return old
}

func (f *fakeProcs) get() int { return f.set(0) }

// waitProcs waits until the fake's Ps are want.
func waitProcs(t *testing.T, f *fakeProcs, want int, what string) {
	t.Helper()
	if msg := eventually(5*time.Second, func() string {
		if f.get() != want {
			return what
		}
		return ""
	}); msg != "" {
		t.Fatalf("%s: GOMAXPROCS %d, want %d (set: %v)", msg, f.get(), want, f.log)
	}
}

func TestProcsFollowLoad(t *testing.T) {
	f := &fakeProcs{n: 4}
	p := newProcs(f.set)
	if got := f.get(); got != 1 {
		t.Fatalf("after newProcs: GOMAXPROCS %d, want 1", got)
	}
	p.calmTicks = 3
	steps := []struct {
		load float64
		want int
	}{
		{0.3, 1},  // a cat of small files: the server mostly waits
		{0.6, 1},  // between the thresholds: no change
		{0.8, 4},  // busy: every CPU
		{1.7, 4},  //
		{0.2, 4},  // one calm sample is not enough
		{0.2, 4},  //
		{0.6, 4},  // the calm is broken: counting starts again
		{0.2, 4},  //
		{0.2, 4},  //
		{0.2, 1},  // three calm samples in a row
		{0.75, 4}, // busy again at once
	}
	for i, s := range steps {
		p.step(s.load)
		if got := f.get(); got != s.want {
			t.Fatalf("step %d (load %.2f): GOMAXPROCS %d, want %d (set: %v)", i, s.load, got, s.want, f.log)
		}
	}
	if want := []int{1, 4, 1, 4}; !slices.Equal(f.log, want) {
		t.Fatalf("GOMAXPROCS set %v, want %v: each change once", f.log, want)
	}
}

// run samples the process's CPU time: a burst of use raises the Ps, calm
// lowers them, and stopping gives back what the process started with.
func TestProcsRun(t *testing.T) {
	f := &fakeProcs{n: 2}
	p := newProcs(f.set)
	var used atomic.Int64 // nanoseconds of CPU
	var busy atomic.Bool
	p.usage = func() time.Duration {
		if busy.Load() {
			used.Add(int64(2 * p.tick)) // two CPUs' worth each sample
		}
		return time.Duration(used.Load())
	}
	p.tick = 5 * time.Millisecond
	p.calmTicks = 4
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { p.run(stop); close(done) }()

	busy.Store(true)
	waitProcs(t, f, 2, "while the process is busy")
	busy.Store(false)
	waitProcs(t, f, 1, "once it is calm")
	close(stop)
	<-done
	if got := f.get(); got != 2 {
		t.Fatalf("after run stopped: GOMAXPROCS %d, want 2", got)
	}
}

func TestProcsOneCPU(t *testing.T) {
	f := &fakeProcs{n: 1}
	p := newProcs(f.set)
	if p != nil {
		t.Fatalf("newProcs on one CPU = %+v, want nil", p)
	}
	p.run(make(chan struct{})) // no-ops on nil
	p.restore()
	if len(f.log) != 0 {
		t.Fatalf("one CPU: GOMAXPROCS set to %v, want nothing set", f.log)
	}
}

// A mount with OneProc starts on one P and gives the process its Ps back
// when it ends.
func TestMountOneProc(t *testing.T) {
	f := &fakeProcs{n: 2}
	m := mountStore(t, MountOptions{OneProc: true, setProcs: f.set})
	f.mu.Lock()
	first := f.log[0]
	f.mu.Unlock()
	if first != 1 {
		t.Fatalf("mounted: GOMAXPROCS set to %d first, want 1", first)
	}
	writeFile(t, m.label("note"), "hello\n")
	m.unmount()
	waitProcs(t, f, 2, "after unmount")
}
