package main

import (
	"bytes"
	"fmt"
	"github.com/theater-storefs/theater-storefs/internal/median"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/pjbgf/sha1cd"
	"golang.org/x/sys/unix"
)

// runGroup measures the rows of one group. On error, the rows measured so
// far come back with it.
func (b *bench) runGroup(g string) ([]*row, error) {
	switch g {
	case "read":
		return b.groupRead()
	case "cat":
		return b.groupCat()
	case "ls":
		return b.groupLs()
	case "cp":
		return b.groupCp()
	case "rss":
		return b.groupRSS()
	case "mount1m":
		return b.groupMillion()
	}
	return nil, fmt.Errorf("no group %q", g)
}

// readBuf is the one buffer every sequential read uses, mount and
// baseline alike.
var readBuf = make([]byte, 1<<20)

// readAll reads path from start to end with 1 MiB reads and returns how
// long that took, open and close included.
func readAll(path string) (int64, time.Duration, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	var n int64
	for {
		k, err := f.Read(readBuf)
		n += int64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return n, 0, err
		}
	}
	if err := f.Close(); err != nil {
		return n, 0, err
	}
	return n, time.Since(start), nil
}

// readRate reads path whole and returns its throughput in bytes/s,
// checking that want bytes came.
func readRate(path string, want int64) (float64, error) {
	n, d, err := readAll(path)
	if err != nil {
		return 0, err
	}
	if n != want {
		return 0, fmt.Errorf("read %d bytes of %s, want %d", n, path, want)
	}
	return float64(n) / d.Seconds(), nil
}

// pair runs the baseline and the mount's measurement runs times each,
// alternating which goes first, and records them in r. Before each of
// the two, prep (if any) runs untimed.
func (b *bench) pair(r *row, prep func() error, base, mnt func(run int) (float64, error)) error {
	for i := 0; i < b.cfg.runs; i++ {
		steps := []struct {
			f   func(int) (float64, error)
			out *[]float64
		}{{base, &r.base}, {mnt, &r.mount}}
		if i%2 == 1 {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for _, s := range steps {
			if err := b.ctx.Err(); err != nil {
				return err
			}
			if prep != nil {
				if err := prep(); err != nil {
					return err
				}
			}
			v, err := s.f(i)
			if err != nil {
				return err
			}
			*s.out = append(*s.out, v)
		}
	}
	return nil
}

func (b *bench) groupRead() ([]*row, error) {
	size := b.cfg.size
	sz := fmtBytes(float64(size))
	warm := &row{what: "sequential read of a " + sz + " blob via by-hash/, page cache warm", baseWhat: "reading data/<h> directly (warm)",
		kind: throughput, goal: &goal{ratio: true, atLeast: true, value: 0.9}}
	cold := &row{what: "the same, cold cache (drop_caches before each read, both sides)", baseWhat: "direct cold read",
		kind: throughput, goal: &goal{ratio: true, atLeast: true, value: 0.8}}
	label := &row{what: "the same via by-label/ (label pointing at the blob), warm", baseWhat: "direct read (warm)",
		kind: throughput, goal: &goal{ratio: true, atLeast: true, value: 0.9}}
	rows := []*row{warm, cold, label}
	if !b.root0 {
		cold.skip = "needs root to drop the caches"
	}

	store, hash, err := b.bigStore()
	if err != nil {
		return rows, err
	}
	m, err := b.mount(store, "read")
	if err != nil {
		return rows, err
	}
	defer b.unmount(m)
	direct := filepath.Join(store, "data", hash)
	byHash := filepath.Join(m.dir, "by-hash", hash)
	byLabel := filepath.Join(m.dir, "by-label", bigLabel)

	// Warm-up: the first open through the mount verifies the blob (once
	// in its life; the verdict is kept in tmp/verified across runs).
	for _, p := range []string{direct, byHash, byLabel} {
		start := time.Now()
		if _, err := readRate(p, size); err != nil {
			return rows, err
		}
		if p == byHash {
			warm.notes = append(warm.notes, fmt.Sprintf("first read through the mount (verifies the blob unless already verified) %s", fmtDur(time.Since(start).Seconds())))
		}
	}
	rate := func(p string) func(int) (float64, error) {
		return func(int) (float64, error) { return readRate(p, size) }
	}
	if err := b.pair(warm, nil, rate(direct), rate(byHash)); err != nil {
		return rows, err
	}
	if cold.skip == "" {
		// The server's read syscalls while the mount's side reads cold:
		// one per FUSE request. With passthrough the kernel reads the
		// blob file itself and the server sees almost none.
		var reqs []int64
		mountCold := func(int) (float64, error) {
			before, err := readSyscalls(m.pid)
			if err != nil {
				return 0, err
			}
			v, err := readRate(byHash, size)
			after, _ := readSyscalls(m.pid)
			reqs = append(reqs, after-before)
			return v, err
		}
		if err := b.pair(cold, dropCaches, rate(direct), mountCold); err != nil {
			return rows, err
		}
		b.passthrough = passthroughVerdict(reqs, size)
		cold.notes = append(cold.notes, fmt.Sprintf("server read syscalls (≈ FUSE requests) per cold read: %v", reqs))
	}
	if err := b.pair(label, nil, rate(direct), rate(byLabel)); err != nil {
		return rows, err
	}
	return rows, nil
}

// passthroughVerdict says whether the cold reads went around the server:
// without passthrough a cold read of size bytes takes at least one FUSE
// request per MiB (the largest read the mount allows).
func passthroughVerdict(reqs []int64, size int64) string {
	if len(reqs) == 0 {
		return ""
	}
	med := median.Of(int64sToFloats(reqs))
	floor := float64(size>>20) / 4
	if med < floor {
		return fmt.Sprintf("active (the server saw ~%.0f requests while %s was read cold through by-hash/; without it, at least %d)", med, fmtBytes(float64(size)), size>>20)
	}
	return fmt.Sprintf("NOT active (the server saw ~%.0f requests while %s was read cold through by-hash/)", med, fmtBytes(float64(size)))
}

func int64sToFloats(v []int64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// catFiles runs `xargs -0 cat` in dir over names and returns how long it
// took. With want > 0 its output is counted and must come to want bytes;
// otherwise it goes to /dev/null, as a user's `cat ... >/dev/null` does:
// the timed runs are not slowed by a pipe into this process.
func (b *bench) catFiles(dir string, names []byte, want int64) (float64, error) {
	cmd := exec.CommandContext(b.ctx, "xargs", "-0", "cat")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(names)
	cw := &countWriter{}
	if want > 0 {
		cmd.Stdout = cw
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("xargs cat in %s: %v%s", dir, err, because(stderr.String()))
	}
	if want > 0 && cw.n != want {
		return 0, fmt.Errorf("xargs cat in %s: %d bytes, want %d", dir, cw.n, want)
	}
	return d.Seconds(), nil
}

// because is ": " and the first line of a command's stderr, or "".
func because(stderr string) string {
	if strings.TrimSpace(stderr) == "" {
		return ""
	}
	return ": " + firstLine(stderr)
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " ..."
	}
	return s
}

func (b *bench) groupCat() ([]*row, error) {
	r := &row{what: fmt.Sprintf("cat of %d blobs of 4 KiB via by-hash/ (xargs -0 cat >/dev/null, warm)", b.cfg.small),
		baseWhat: "the same files read directly from data/", kind: duration,
		goal: &goal{ratio: true, value: 3}}
	rows := []*row{r}
	store, err := b.smallStore()
	if err != nil {
		return rows, err
	}
	names, err := blobNames(store)
	if err != nil {
		return rows, err
	}
	if len(names) != b.cfg.small {
		return rows, fmt.Errorf("%s holds %d blobs, want %d (run with -fresh)", store, len(names), b.cfg.small)
	}
	input := []byte(strings.Join(names, "\x00"))
	want := int64(len(names)) * smallSize
	m, err := b.mount(store, "cat")
	if err != nil {
		return rows, err
	}
	defer b.unmount(m)
	data, byHash := filepath.Join(store, "data"), filepath.Join(m.dir, "by-hash")
	// Warm-up, with every byte counted: page cache on both sides, and the
	// mount verifies each blob on its first read.
	if _, err := b.catFiles(data, input, want); err != nil {
		return rows, err
	}
	first, err := b.catFiles(byHash, input, want)
	if err != nil {
		return rows, err
	}
	r.notes = append(r.notes, "first cat through the mount (lookups, verification unless already verified): "+fmtDur(first))
	err = b.pair(r, nil,
		func(int) (float64, error) { return b.catFiles(data, input, 0) },
		func(int) (float64, error) { return b.catFiles(byHash, input, 0) })
	return rows, err
}

// lsCmd runs `ls ARGS... dir > /dev/null` (LC_ALL=C, both sides alike) and
// returns how long it took.
func (b *bench) lsCmd(dir string, args ...string) (float64, error) {
	cmd := exec.CommandContext(b.ctx, "ls", append(args, dir)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run() // stdout is /dev/null
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("ls %s %s: %v%s", strings.Join(args, " "), dir, err, because(stderr.String()))
	}
	return d.Seconds(), nil
}

func (b *bench) groupLs() ([]*row, error) {
	r := &row{what: fmt.Sprintf("ls -l of by-hash/ with %d blobs (ls -l --color=never > /dev/null)", b.cfg.many),
		baseWhat: "ls -l data/", kind: duration, goal: &goal{ratio: true, value: 3}}
	rows := []*row{r}
	store, err := b.manyStore(b.cfg.many)
	if err != nil {
		return rows, err
	}
	m, err := b.mount(store, "ls")
	if err != nil {
		return rows, err
	}
	defer b.unmount(m)
	data, byHash := filepath.Join(store, "data"), filepath.Join(m.dir, "by-hash")
	if _, err := b.lsCmd(data, "-l", "--color=never"); err != nil {
		return rows, err
	}
	first, err := b.lsCmd(byHash, "-l", "--color=never")
	if err != nil {
		return rows, err
	}
	r.notes = append(r.notes, "first ls -l after mounting (every entry looked up): "+fmtDur(first))
	err = b.pair(r, nil,
		func(int) (float64, error) { return b.lsCmd(data, "-l", "--color=never") },
		func(int) (float64, error) { return b.lsCmd(byHash, "-l", "--color=never") })
	if err == nil {
		if pk, perr := peakRSS(m.pid); perr == nil {
			r.notes = append(r.notes, "server peak RSS after these listings: "+fmtBytes(float64(pk)))
		}
	}
	return rows, err
}

// hashRate hashes path with sha1cd, 1 MiB at a time, and returns the
// throughput in bytes/s.
func hashRate(path string, want int64) (float64, error) {
	start := time.Now()
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha1cd.New()
	n, err := io.CopyBuffer(h, onlyReader{f}, readBuf)
	if err != nil {
		return 0, err
	}
	h.Sum(nil)
	d := time.Since(start)
	if n != want {
		return 0, fmt.Errorf("hashed %d bytes of %s, want %d", n, path, want)
	}
	return float64(n) / d.Seconds(), nil
}

// onlyReader hides WriterTo and the like, so CopyBuffer uses the buffer.
type onlyReader struct{ r io.Reader }

func (o onlyReader) Read(p []byte) (int, error) { return o.r.Read(p) }

// cpRate runs `cp src dst` and returns the throughput in bytes/s; with
// fsync, it also fsyncs dst (the mount's commit does on close).
func (b *bench) cpRate(src, dst string, size int64, fsync bool) (float64, error) {
	cmd := exec.CommandContext(b.ctx, "cp", src, dst)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return 0, fmt.Errorf("cp %s %s: %v%s", src, dst, err, because(stderr.String()))
	}
	if fsync {
		f, err := os.Open(dst)
		if err != nil {
			return 0, err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	d := time.Since(start)
	fi, err := os.Stat(dst)
	if err != nil {
		return 0, err
	}
	if fi.Size() != size {
		return 0, fmt.Errorf("%s holds %d bytes after cp, want %d", dst, fi.Size(), size)
	}
	return float64(size) / d.Seconds(), nil
}

// stamp makes src's content new for each run (a dedup would skip the
// write) by overwriting its first bytes; the page cache stays warm.
func stamp(src string, run int) error {
	f, err := os.OpenFile(src, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = fmt.Fprintf(f, "mountbench %d %d %d\n", os.Getpid(), run, time.Now().UnixNano())
	return err
}

// scratchStore makes an empty store that cleanup removes.
func (b *bench) scratchStore(name string) (string, error) {
	d := filepath.Join(b.dir, fmt.Sprintf("scratch-%s-%d", name, os.Getpid()))
	if err := os.RemoveAll(d); err != nil {
		return "", err
	}
	b.addScratch(d)
	return d, makeStoreDirs(d)
}

func (b *bench) groupCp() ([]*row, error) {
	size := b.cfg.size
	r := &row{what: "cp of a " + fmtBytes(float64(size)) + " file into by-label/ (until cp exits: spooled, hashed, fsynced, labelled)",
		baseWhat: "sha1cd hashing of the same file alone, from page cache", kind: throughput,
		goal: &goal{ratio: true, atLeast: true, value: 0.75}}
	disk := &row{what: "info: cp of the same file to the same disk, then fsync (no FUSE)", baseWhat: "the same sha1cd hashing",
		kind: throughput}
	rows := []*row{r, disk}
	src, err := b.cpSource()
	if err != nil {
		return rows, err
	}
	store, err := b.scratchStore("cp")
	if err != nil {
		return rows, err
	}
	plain := filepath.Join(store, "plain")
	if err := os.MkdirAll(plain, 0o755); err != nil {
		return rows, err
	}
	m, err := b.mount(store, "cp")
	if err != nil {
		return rows, err
	}
	defer b.unmount(m)
	// Warm-up: the source in the page cache, the write path once.
	if _, err := readRate(src, size); err != nil {
		return rows, err
	}
	prep := func(run int) func() error {
		return func() error {
			if err := stamp(src, run); err != nil {
				return err
			}
			syscall.Sync()
			return nil
		}
	}
	run := 0
	if err := prep(-1)(); err != nil {
		return rows, err
	}
	if _, err := b.cpRate(src, filepath.Join(m.dir, "by-label", "cp-warmup"), size, false); err != nil {
		return rows, err
	}
	os.Remove(filepath.Join(m.dir, "by-label", "cp-warmup"))
	err = b.pair(r, func() error { run++; return prep(run)() },
		func(int) (float64, error) { return hashRate(src, size) },
		func(i int) (float64, error) {
			dst := filepath.Join(m.dir, "by-label", fmt.Sprintf("cp-%d", i))
			v, err := b.cpRate(src, dst, size, false)
			if err == nil {
				// The label, not the blob: the store is removed at the end.
				err = os.Remove(dst)
			}
			return v, err
		})
	if err != nil {
		return rows, err
	}
	err = b.pair(disk, func() error { run++; return prep(run)() },
		func(int) (float64, error) { return hashRate(src, size) },
		func(i int) (float64, error) {
			dst := filepath.Join(plain, "copy")
			v, err := b.cpRate(src, dst, size, true)
			os.Remove(dst)
			return v, err
		})
	return rows, err
}

func (b *bench) groupRSS() ([]*row, error) {
	size := b.cfg.size
	r := &row{what: "server peak RSS (VmHWM) while writing and reading " + fmtBytes(float64(size)) + " (cp into by-label/, read back by label and by hash)",
		kind: memory, goal: &goal{value: 100 << 20}}
	rows := []*row{r}
	src, err := b.cpSource()
	if err != nil {
		return rows, err
	}
	if _, err := readRate(src, size); err != nil {
		return rows, err
	}
	for i := 0; i < b.cfg.runs; i++ {
		if err := b.ctx.Err(); err != nil {
			return rows, err
		}
		// A fresh store and server each run, so VmHWM is this run's.
		store, err := b.scratchStore("rss")
		if err != nil {
			return rows, err
		}
		if err := stamp(src, i); err != nil {
			return rows, err
		}
		m, err := b.mount(store, "rss")
		if err != nil {
			return rows, err
		}
		v, err := b.rssRun(m, src, size)
		if uerr := b.unmount(m); err == nil {
			err = uerr
		}
		os.RemoveAll(store)
		if err != nil {
			return rows, err
		}
		r.mount = append(r.mount, v)
	}
	return rows, nil
}

// rssRun writes src into a label, reads it back by label and by hash
// (the by-hash read cold, so it goes through the server when passthrough
// is off), and returns the server's VmHWM.
func (b *bench) rssRun(m *mount, src string, size int64) (float64, error) {
	lbl := filepath.Join(m.dir, "by-label", "rss")
	if _, err := b.cpRate(src, lbl, size, false); err != nil {
		return 0, err
	}
	if _, err := readRate(lbl, size); err != nil {
		return 0, err
	}
	hash := make([]byte, 64)
	n, err := unix.Getxattr(lbl, "user.theater.hash", hash)
	if err != nil {
		return 0, fmt.Errorf("getxattr user.theater.hash %s: %w", lbl, err)
	}
	byHash := filepath.Join(m.dir, "by-hash", string(hash[:n]))
	if b.root0 {
		if err := dropCaches(); err != nil {
			return 0, err
		}
	}
	if _, err := readRate(byHash, size); err != nil {
		return 0, err
	}
	pk, err := peakRSS(m.pid)
	return float64(pk), err
}

// lsPeaks runs ls with args on by-hash/ of a fresh mount of store, runs
// times, and records the server's peak RSS of each run in r; it returns
// the times of those listings, of the same on data/, and of the servers'
// exits after their unmounts.
func (b *bench) lsPeaks(store string, r *row, args ...string) (lsMount, lsDirect, exits []float64, err error) {
	data := filepath.Join(store, "data")
	for i := 0; i < b.cfg.runs; i++ {
		m, err := b.mount(store, "million")
		if err != nil {
			return nil, nil, nil, err
		}
		d, err := b.lsCmd(filepath.Join(m.dir, "by-hash"), args...)
		var pk int64
		if err == nil {
			pk, err = peakRSS(m.pid)
		}
		if uerr := b.unmount(m); err == nil {
			err = uerr
		}
		if err != nil {
			return nil, nil, nil, err
		}
		exits = append(exits, m.exitWait.Seconds())
		r.mount = append(r.mount, float64(pk))
		lsMount = append(lsMount, d)
		if d, err = b.lsCmd(data, args...); err != nil {
			return nil, nil, nil, err
		}
		lsDirect = append(lsDirect, d)
	}
	return lsMount, lsDirect, exits, nil
}

func (b *bench) groupMillion() ([]*row, error) {
	n := b.cfg.million
	rss := &row{what: fmt.Sprintf("server peak RSS while listing %d blobs (ls by-hash > /dev/null)", n),
		kind: memory, goal: &goal{value: 200 << 20}}
	mnt := &row{what: fmt.Sprintf("mount of a store with %d blobs until the mount answers (mount returns + first stat of by-hash)", n),
		kind: duration, goal: &goal{value: 1}}
	rssLong := &row{what: fmt.Sprintf("server peak RSS while listing %d blobs with attributes (ls -l by-hash > /dev/null)", n),
		kind: memory, goal: &goal{value: 200 << 20}}
	mntCold := &row{what: "info: the same mount, cold cache (drop_caches before each mount)", kind: duration}
	rows := []*row{rss, rssLong, mnt, mntCold}
	if !b.root0 {
		mntCold.skip = "needs root to drop the caches"
	}
	store, err := b.manyStore(n)
	if err != nil {
		return rows, err
	}
	// Mount times first, on a quiet machine: listing a million entries
	// leaves the kernel's caches full, and a mount after it is slower.
	mountOnce := func(r *row) error {
		m, err := b.mount(store, "million")
		if err != nil {
			return err
		}
		if err := b.unmount(m); err != nil {
			return err
		}
		r.mount = append(r.mount, m.answered.Seconds())
		return nil
	}
	for i := 0; i < b.cfg.runs; i++ {
		if err := b.ctx.Err(); err != nil {
			return rows, err
		}
		if err := mountOnce(mnt); err != nil {
			return rows, err
		}
	}
	if mntCold.skip == "" {
		for i := 0; i < b.cfg.runs; i++ {
			if err := dropCaches(); err != nil {
				return rows, err
			}
			if err := mountOnce(mntCold); err != nil {
				return rows, err
			}
		}
	}
	// Plain ls makes no inodes; ls -l gives the kernel one for every
	// entry, and the server a node for each inode the kernel holds,
	// unless by-hash/ bounds them.
	lsMount, lsDirect, exits, err := b.lsPeaks(store, rss)
	if err != nil {
		return rows, err
	}
	rss.notes = append(rss.notes,
		fmt.Sprintf("ls by-hash on a fresh mount took %s (median), ls data/ %s", fmtDur(median.Of(lsMount)), fmtDur(median.Of(lsDirect))),
		fmt.Sprintf("the server exited %s (median) after the unmount that followed", fmtDur(median.Of(exits))))
	lsMount, lsDirect, _, err = b.lsPeaks(store, rssLong, "-l", "--color=never")
	if err != nil {
		return rows, err
	}
	rssLong.notes = append(rssLong.notes,
		fmt.Sprintf("ls -l by-hash on a fresh mount took %s (median), ls -l data/ %s", fmtDur(median.Of(lsMount)), fmtDur(median.Of(lsDirect))))
	return rows, nil
}
