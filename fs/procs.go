package fs

import (
	"fmt"
	"log/slog"
	"runtime"
	"syscall"
	"time"
)

// procs sets how many CPUs run the server's Go code (GOMAXPROCS) when the
// mount asks for it (MountOptions.AdaptiveProcs): one while the server
// mostly waits on the kernel, the runtime's default while it is busy.
//
// Most FUSE requests are short: a round trip whose Go work is a
// microsecond or two, while the goroutines reading /dev/fuse wait in
// read(2). With two Ps the runtime keeps waking spare threads for them
// and its monitor keeps retaking the Ps of the blocked readers: per
// 10,000 opens of a `cat` through by-hash/, 4,900 futex calls and 6,700
// monitor sleeps with two Ps, 330 and 3,800 with one. On one P the server
// spends 30% less CPU on them, and the cat takes about a fifth less time.
//
// Busy work needs every CPU: `cp` into by-label/ hashes beside the copy
// from the kernel (0.64x the speed on one P), and `ls -l` of a million
// blobs needs the collector and the inode trimmer beside the listing (on
// one P the server's memory grew to 500 MiB). So procs samples the CPU
// time the process uses, every procTick: once its mean over busyTime
// reaches busyLoad of a CPU, the server gets the default Ps; once its mean
// over calmTime is under idleLoad, one again. The means, and the gap
// between the two loads, keep a steady load on either side: the same
// requests cost more CPU on more Ps.
//
// A change of GOMAXPROCS stops the world, and waits for a collection's
// mark phase under way; it happens at most twice a calmTime.
type procs struct {
	set   func(n int)          // 1, or 0 for the runtime's default; tests watch it instead
	usage func() time.Duration // CPU time the process has used
	log   *slog.Logger         // notes each change at Debug level; nil for none

	busyTicks, calmTicks int

	one   bool      // on one P now
	loads []float64 // the last calmTicks samples, newest last
}

const (
	busyLoad = 0.9 // of one CPU: the server is busy
	idleLoad = 0.7 // of one CPU: the server mostly waits
	procTick = 50 * time.Millisecond
	busyTime = 200 * time.Millisecond
	calmTime = time.Second
)

// setProcs is procs.set for real: 0 gives the default back to the runtime,
// which then follows CPU quota changes again.
func setProcs(n int) {
	if n == 0 {
		runtime.SetDefaultGOMAXPROCS()
		return
	}
	runtime.GOMAXPROCS(n)
}

// newProcs puts the server on one P; nil (every method a no-op) where the
// runtime gives it only one anyway. run then follows the load.
func newProcs(set func(int)) *procs {
	if set == nil {
		if runtime.GOMAXPROCS(0) <= 1 {
			return nil
		}
		set = setProcs
	}
	p := &procs{set: set, usage: cpuUsed,
		busyTicks: int(busyTime / procTick), calmTicks: int(calmTime / procTick)}
	p.setOne(true, 0)
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

// run samples the load every tick until stop is closed, then gives the
// runtime its default back.
func (p *procs) run(stop <-chan struct{}, tick time.Duration) {
	if p == nil {
		return
	}
	defer p.restore()
	t := time.NewTicker(tick)
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
	p.loads = append(p.loads, load)
	if len(p.loads) > p.calmTicks {
		p.loads = p.loads[1:]
	}
	switch {
	case p.one && len(p.loads) >= p.busyTicks && mean(p.loads[len(p.loads)-p.busyTicks:]) >= busyLoad:
		p.setOne(false, load)
	case !p.one && len(p.loads) == p.calmTicks && mean(p.loads) < idleLoad:
		p.setOne(true, load)
	}
}

func mean(v []float64) float64 {
	sum := 0.0
	for _, x := range v {
		sum += x
	}
	return sum / float64(len(v))
}

// setOne puts the server on one P or on the default, and starts the
// samples afresh: a change is judged by the load after it.
func (p *procs) setOne(one bool, load float64) {
	p.one = one
	p.loads = p.loads[:0]
	n := 0
	if one {
		n = 1
	}
	p.set(n)
	if p.log != nil {
		p.log.Debug("server CPUs", "one", one, "load", fmt.Sprintf("%.2f", load))
	}
}

// restore gives the runtime its default back, when run ends (unmount).
func (p *procs) restore() {
	if p != nil {
		p.set(0)
	}
}
