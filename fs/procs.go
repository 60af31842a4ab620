package fs

import (
	"fmt"
	"log/slog"
	"runtime"
	"syscall"
	"time"
)

// procs sets how many CPUs run the server's Go code (GOMAXPROCS) when the
// mount asks for it (MountOptions.OneProc): one while the server mostly
// waits, all of them while it is busy.
//
// Most FUSE requests are short: a round trip whose Go work is a
// microsecond or two, while the goroutines reading /dev/fuse wait in
// read(2). With two Ps the runtime keeps waking spare threads for them
// and its monitor keeps retaking the Ps of the blocked readers: per
// 10,000 opens of a `cat` through by-hash/, 4,900 futex calls and 6,700
// monitor sleeps with two Ps, 330 and 3,800 with one. On one P the server
// spends 30% less CPU on them, and the cat takes 22% less time.
//
// Busy work needs every CPU: `cp` into by-label/ hashes beside the copy
// from the kernel (a quarter slower on one P), and `ls -l` of a million
// blobs needs the collector and the inode trimmer beside the listing (on
// one P the server's memory grew to 500 MiB). So procs samples the CPU
// time the process uses: from busyLoad of one CPU it gives the server
// every CPU, and it goes back to one once the load has stayed under
// idleLoad for calmTime.
type procs struct {
	low, high int
	set       func(int) int        // runtime.GOMAXPROCS; tests watch it instead
	usage     func() time.Duration // CPU time the process has used
	tick      time.Duration        // how often the load is sampled
	calmTicks int                  // samples under idleLoad before going back to low

	log  *slog.Logger // notes each change at Debug level; nil for none
	cur  int          // what is set now
	calm int          // samples under idleLoad in a row
}

const (
	busyLoad = 0.75 // of one CPU: the server is busy
	idleLoad = 0.5  // of one CPU: the server is mostly waiting
	procTick = 50 * time.Millisecond
	calmTime = time.Second
)

// newProcs starts the server on one P; nil (every method a no-op) where
// there is only one CPU. run then follows the load.
func newProcs(set func(int) int) *procs {
	if set == nil {
		set = runtime.GOMAXPROCS
	}
	high := set(0)
	if high <= 1 {
		return nil
	}
	p := &procs{low: 1, high: high, set: set, usage: cpuUsed,
		tick: procTick, calmTicks: int(calmTime / procTick), cur: 1}
	set(p.low)
	return p
}

// cpuUsed is the user and system time the process has used.
func cpuUsed() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// run samples the load until stop is closed, then gives the process back
// the Ps it started with.
func (p *procs) run(stop <-chan struct{}) {
	if p == nil {
		return
	}
	defer p.set(p.high)
	t := time.NewTicker(p.tick)
	defer t.Stop()
	used, at := p.usage(), time.Now()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			u := p.usage()
			if d := now.Sub(at); d > 0 {
				p.step(float64(u-used) / float64(d))
			}
			used, at = u, now
		}
	}
}

// step takes one sample of the load, in CPUs.
func (p *procs) step(load float64) {
	switch {
	case load >= busyLoad:
		p.calm = 0
		p.setTo(p.high, load)
	case load < idleLoad && p.cur != p.low:
		if p.calm++; p.calm >= p.calmTicks {
			p.calm = 0
			p.setTo(p.low, load)
		}
	default:
		p.calm = 0
	}
}

func (p *procs) setTo(n int, load float64) {
	if p.cur == n {
		return
	}
	p.cur = n
	p.set(n)
	if p.log != nil {
		p.log.Debug("server CPUs", "gomaxprocs", n, "load", fmt.Sprintf("%.2f", load))
	}
}

// restore gives the process back the Ps it started with, for a mount
// that failed before run started.
func (p *procs) restore() {
	if p != nil {
		p.set(p.high)
	}
}
