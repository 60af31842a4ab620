package main

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/theater-storefs/theater-storefs/fs"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
	"github.com/urfave/cli/v2"
)

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "show the store as files at MOUNTPOINT (by-hash/, by-label/, actors/)",
		ArgsUsage: "MOUNTPOINT",
		Description: "Returns once the mount answers and serves in the background; --foreground stays\n" +
			"attached (for systemd and debugging). Unmount with `theater-storefs unmount MOUNTPOINT`,\n" +
			"umount or fusermount3 -u. Labels are files: writing one stores the content and points\n" +
			"the label at it; mode, owner and time changes are accepted and not stored.\n" +
			"MOUNTPOINT/.theater/stats counts the FUSE operations served (JSON); --metrics serves\n" +
			"the same counters to Prometheus.\n" +
			"With --store s3://BUCKET/PREFIX?endpoint=URL the mount serves a bucket: blobs are\n" +
			"verified into a local cache (--cache, --cache-size), writes are uploaded at close,\n" +
			"and labels changed elsewhere show within --poll, or at once with --labels etcd://...\n" +
			"(a global flag, before mount).",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "stay attached until unmounted"},
			&cli.BoolFlag{Name: "read-only", Aliases: []string{"ro"}, Usage: "refuse every change"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users in (with default_permissions)"},
			&cli.BoolFlag{Name: "debug", Usage: "log every FUSE operation with its errno and latency (debug level)"},
			&cli.BoolFlag{Name: "force", Usage: "first clear a stale mount of another program at MOUNTPOINT, or abort a mount there that does not answer"},
			&cli.StringFlag{Name: "log-file", Usage: "in the background, append logs to `FILE` (default: discard)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics at http://`ADDR`/metrics (loopback only, e.g. 127.0.0.1:9464)"},
			&cli.BoolFlag{Name: "metrics-public", Usage: "let --metrics listen on an address other machines can reach"},
			&cli.StringFlag{Name: "cache", Usage: "with a bucket: keep verified copies of blobs read in `DIR` (default: under ~/.cache/theater-storefs)"},
			&cli.StringFlag{Name: "cache-size", Value: "1GiB", Usage: "with a bucket: at most `SIZE` of copies (KiB, MiB, GiB)"},
			&cli.DurationFlag{Name: "poll", Value: remote.DefaultPollInterval, Usage: "with a bucket: look for labels changed elsewhere every `INTERVAL`"},
		},
		Action: cmdMount,
	}
}

func unmountCommand() *cli.Command {
	return &cli.Command{
		Name:      "unmount",
		Aliases:   []string{"umount"},
		Usage:     "unmount MOUNTPOINT; the server exits",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "abort a mount that does not answer (its server stopped or hung): waiting requests fail, then it is unmounted; detach one that answers but is busy"},
		},
		Action: cmdUnmount,
	}
}

// readyFd is the descriptor a background server reports readiness on.
const readyFd = 3

// envReady tells the server process that fd 3 is its readiness pipe.
const envReady = "THEATER_STOREFS_READY_FD"

func cmdMount(c *cli.Context) error {
	if err := nargs(c, 1, 1); err != nil {
		return err
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	bucket, err := mountBucket(c, mnt)
	if err != nil {
		return err
	}
	dir := storeDir(c)
	if bucket == nil {
		if dir, err = filepath.Abs(dir); err != nil {
			return err
		}
	}
	if addr := c.String("metrics"); addr != "" {
		if err := checkMetricsAddr(addr, c.Bool("metrics-public")); err != nil {
			return err
		}
	} else if c.Bool("metrics-public") {
		return usagef("mount: --metrics-public needs --metrics ADDR")
	}
	if err := checkFuse(); err != nil {
		return err
	}
	if err := prepareMountpoint(mnt, c.Bool("force")); err != nil {
		return err
	}
	if bucket != nil {
		if err := checkOverlap(bucket.CacheDir, mnt); err != nil {
			return err
		}
	} else {
		if err := checkOverlap(dir, mnt); err != nil {
			return err
		}
		if err := checkStoreDir(dir, true); err != nil {
			return err
		}
	}
	if !c.Bool("foreground") && os.Getenv(envReady) == "" {
		return spawnServer(c, mnt, dir, bucket)
	}
	return serve(c, mnt, dir, bucket)
}

// spawnServer starts this program again in the foreground, detached, and
// waits until it says the mount answers, or why it failed.
func spawnServer(c *cli.Context, mnt, dir string, bucket *remote.Options) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	args := append([]string{"--store", dir}, globalFlags(c)...)
	args = append(args, "mount", "--foreground")
	for _, f := range []string{"read-only", "allow-other", "debug", "force", "metrics-public"} {
		if c.Bool(f) {
			args = append(args, "--"+f)
		}
	}
	if addr := c.String("metrics"); addr != "" {
		args = append(args, "--metrics", addr)
	}
	if bucket != nil {
		args = append(args, "--cache", bucket.CacheDir, "--cache-size", c.String("cache-size"), "--poll", c.Duration("poll").String())
	}
	if lf := c.String("log-file"); lf != "" {
		abs, err := filepath.Abs(lf)
		if err != nil {
			return err
		}
		args = append(args, "--log-file", abs)
	}
	args = append(args, mnt)
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), envReady+"=1")
	cmd.ExtraFiles = []*os.File{w} // becomes fd 3
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Dir = "/"
	if lf := c.String("log-file"); lf != "" {
		f, err := os.OpenFile(lf, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer f.Close()
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("starting the server: %w", err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	line, err := bufio.NewReader(r).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		cmd.Process.Release()
		return nil
	case line != "":
		return errors.New(line)
	}
	select {
	case werr := <-exited:
		return fmt.Errorf("the server exited before the mount was ready: %v", werr)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("the server did not report readiness: %v", err)
	}
}

// globalFlags passes the logging flags and --labels on to the server
// process.
func globalFlags(c *cli.Context) []string {
	var out []string
	if lf := c.String("log-format"); lf != "" {
		out = append(out, "--log-format", lf)
	}
	if c.Bool("verbose") {
		out = append(out, "--verbose")
	}
	if l := c.String("labels"); l != "" {
		out = append(out, "--labels", l)
	}
	return out
}

// serverMemoryLimit is the soft memory limit of the server's Go runtime
// (GOMEMLIMIT overrides it).
const serverMemoryLimit = 150 << 20

// serve mounts and serves until unmounted or signalled: the store
// directory dir, or the bucket dir names with the options bucket.
func serve(c *cli.Context, mnt, dir string, bucket *remote.Options) (err error) {
	if logLevel.Level() > slog.LevelWarn {
		logLevel.Set(slog.LevelWarn)
	}
	if c.Bool("debug") {
		logLevel.Set(slog.LevelDebug)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// The heap the server needs stays well under this at any store
		// size (by-hash/ bounds its inodes): the Go collector is asked to
		// keep the process under it, rather than let garbage grow to twice
		// the live heap on a big listing.
		debug.SetMemoryLimit(serverMemoryLimit)
	}
	if prof := os.Getenv("THEATER_STOREFS_CPUPROFILE"); prof != "" {
		// For profiling the server under a benchmark (make bench-mount).
		if f, err := os.Create(prof); err == nil {
			pprof.StartCPUProfile(f)
			defer func() { pprof.StopCPUProfile(); f.Close() }()
		}
	}
	var ready *os.File
	if os.Getenv(envReady) != "" {
		ready = os.NewFile(readyFd, "ready")
		defer func() {
			if err != nil { // tell the waiting parent why
				fmt.Fprintln(ready, oneLine(err))
			}
			ready.Close()
		}()
	}
	st, err := openMountStore(c, dir, bucket)
	if err != nil {
		return err
	}
	defer st.Close()
	stats := fs.NewStats()
	if addr := c.String("metrics"); addr != "" {
		// Listening first: an address in use fails the mount, not later.
		ms, err := startMetrics(addr, stats)
		if err != nil {
			return err
		}
		defer ms.Close()
		slog.Info("serving metrics", "url", "http://"+ms.Addr()+"/metrics")
	}
	server, err := fs.Mount(mnt, st, fs.MountOptions{
		Options:    fs.Options{ReadOnly: c.Bool("read-only"), Logger: slog.Default()},
		FsName:     dir,
		AllowOther: c.Bool("allow-other"),
		Debug:      c.Bool("debug"),
		Stats:      stats,
		// One P serves metadata round trips best (fs.procs); a
		// GOMAXPROCS the user set is theirs.
		AdaptiveProcs: !userSetProcs(),
	})
	if err != nil {
		if strings.Contains(err.Error(), "fusermount exited") {
			// go-fuse gives fusermount3's wait status; its reason went
			// to stderr.
			return fmt.Errorf("mounting %s: fusermount3 refused (run with --foreground to see its reason)", mnt)
		}
		return fmt.Errorf("mounting %s: %w", mnt, err)
	}
	slog.Info("mounted", "store", dir, "mountpoint", mnt)
	if err := sdNotify("READY=1"); err != nil {
		slog.Warn("cannot tell systemd the mount is ready", "err", err)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		for s := range sigs {
			slog.Info("unmounting on signal", "signal", s.String())
			sdNotify("STOPPING=1")
			if err := server.Unmount(); err != nil {
				slog.Warn("unmount failed; detaching", "err", err)
				syscall.Unmount(mnt, syscall.MNT_DETACH)
			}
		}
	}()
	if ready != nil {
		fmt.Fprintln(ready, "ok")
		ready.Close()
		ready = nil
		// Nothing is left to read our stdio in the background.
		if c.String("log-file") == "" {
			devnull, _ := os.OpenFile(os.DevNull, os.O_RDWR, 0)
			slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
			if devnull != nil {
				syscall.Dup2(int(devnull.Fd()), 1)
				syscall.Dup2(int(devnull.Fd()), 2)
			}
		}
	}
	server.Wait()
	slog.Info("unmounted", "mountpoint", mnt)
	return nil
}

// mountStore is a store a mount serves: a directory or a bucket.
type mountStore interface {
	fs.Store
	Close() error
}

var (
	_ mountStore = (*store.Store)(nil)
	_ mountStore = (*remote.Store)(nil)
)

func openMountStore(c *cli.Context, dir string, bucket *remote.Options) (mountStore, error) {
	if bucket == nil {
		return store.Open(dir, store.Options{ReadOnly: c.Bool("read-only"), Logger: slog.Default()})
	}
	loc, err := remote.ParseURL(dir)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	opts := *bucket
	opts.Logger = slog.Default() // as set up for serving
	return remote.Open(c.Context, loc, opts)
}

// mountBucket returns the options of a bucket's store when --store names
// one (nil for a directory): its cache, by default one of its own for
// each bucket and mountpoint, since two mounts cannot share one.
func mountBucket(c *cli.Context, mnt string) (*remote.Options, error) {
	where := storeDir(c)
	if !remote.IsURL(where) {
		if err := notAURL(where); err != nil {
			return nil, err
		}
		if c.String("labels") != "" {
			return nil, usagef("mount: --labels is for a bucket's labels; %s is a store directory", where)
		}
		for _, f := range []string{"cache", "cache-size", "poll"} {
			if c.IsSet(f) {
				return nil, usagef("mount: --%s is for a bucket; %s is a store directory", f, where)
			}
		}
		return nil, nil
	}
	loc, err := remote.ParseURL(where)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	size, err := parseSize(c.String("cache-size"))
	if err != nil {
		return nil, usagef("mount: --cache-size %q: %v", c.String("cache-size"), err)
	}
	if c.Duration("poll") < 10*time.Millisecond {
		return nil, usagef("mount: --poll %v is too short; 1s is the default", c.Duration("poll"))
	}
	cache := c.String("cache")
	if cache == "" {
		root, err := os.UserCacheDir()
		if err != nil {
			return nil, fmt.Errorf("mount: no cache directory for the bucket (%v); pass --cache DIR", err)
		}
		key := sha1.Sum([]byte(loc.String() + "\x00" + mnt))
		cache = filepath.Join(root, "theater-storefs", loc.Bucket+"-"+hex.EncodeToString(key[:6]))
	}
	if cache, err = filepath.Abs(cache); err != nil {
		return nil, err
	}
	labels := c.String("labels")
	if labels != "" {
		if _, _, err := remote.ParseEtcdURL(labels); err != nil {
			return nil, usageError{err.Error()}
		}
	}
	return &remote.Options{
		ReadOnly: c.Bool("read-only"), Labels: labels,
		CacheDir: cache, CacheSize: size, PollInterval: c.Duration("poll"),
	}, nil
}

// parseSize reads a byte count: 1073741824, 512MiB, 1GiB, 64KiB.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n <= 0 || n > (1<<62)/u.mult {
				return 0, errors.New("want a positive size such as 512MiB or 2GiB")
			}
			return n * u.mult, nil
		}
	}
	return 0, errors.New("want a positive size such as 512MiB or 2GiB")
}

// checkFuse says in one sentence what to install when FUSE is missing.
func checkFuse() error {
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return errors.New("FUSE is not available: /dev/fuse is missing (install fuse3 with `apt-get install fuse3` and load the fuse module, or run the container with --device /dev/fuse)")
	}
	if os.Geteuid() != 0 {
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return errors.New("fusermount3 is missing: install it with `apt-get install fuse3` (needed to mount as a user other than root)")
		}
		// fusermount3 opens it as this user: say why it would fail,
		// rather than pass on its bare exit status.
		f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("cannot open /dev/fuse as this user (%v): mount as root, or give the user read and write access to /dev/fuse", errors.Unwrap(err))
		}
		f.Close()
	}
	return nil
}

// prepareMountpoint refuses a mountpoint that is not an empty directory,
// and clears a stale mount left by a crashed server.
func prepareMountpoint(mnt string, force bool) error {
	// statfs always reaches the server; a stat may be answered from the
	// kernel's cache for a while after the server died.
	err := statfsWithin(mnt, answerTimeout)
	if errors.Is(err, errNoAnswer) {
		if !force {
			return fmt.Errorf("%s is mounted but does not answer (its server is stopped or hung): `theater-storefs unmount --force %s` aborts it, or pass --force", mnt, mnt)
		}
		slog.Warn("aborting a mount that does not answer", "mountpoint", mnt)
		if err := abort(mnt); err != nil {
			return fmt.Errorf("%s does not answer and aborting it failed: %w", mnt, err)
		}
		err = statfsWithin(mnt, answerTimeout)
	}
	if errors.Is(err, syscall.ENOTCONN) {
		fstype := mountType(mnt)
		if fstype != "fuse.theater-storefs" && !force {
			return fmt.Errorf("%s is a stale mount of %s (transport endpoint is not connected): unmount it with `fusermount3 -u %s`, or pass --force", mnt, fstype, mnt)
		}
		slog.Warn("clearing a stale mount left by a crashed server", "mountpoint", mnt)
		if err := detach(mnt); err != nil {
			return fmt.Errorf("%s is a stale mount and clearing it failed: %w", mnt, err)
		}
		err = statfsWithin(mnt, answerTimeout)
	}
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, err)
	}
	if t := mountType(mnt); t != "" {
		return fmt.Errorf("mountpoint %s is already mounted (%s)", mnt, t)
	}
	d, err := os.Open(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint %s: %w", mnt, errors.Unwrap(err))
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	if names, _ := d.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty", mnt)
	}
	return nil
}

// checkOverlap refuses a mountpoint inside the store or a store inside the
// mountpoint: the server would read through its own mount and deadlock.
func checkOverlap(dir, mnt string) error {
	real := func(p string) string {
		if r, err := filepath.EvalSymlinks(p); err == nil {
			return r
		}
		return filepath.Clean(p)
	}
	d, m := real(dir), real(mnt)
	within := func(a, b string) bool { return a == b || strings.HasPrefix(a, b+string(filepath.Separator)) }
	switch {
	case within(m, d):
		return fmt.Errorf("mountpoint %s is inside the store %s", mnt, dir)
	case within(d, m):
		return fmt.Errorf("the store %s is inside the mountpoint %s", dir, mnt)
	}
	return nil
}

// mountType returns the file system type mounted at p, from
// /proc/self/mountinfo, or "".
func mountType(p string) string {
	t, _ := lastMount(p)
	return t
}

// lastMount returns the file system type of the mount in effect at p (the
// last one there in /proc/self/mountinfo) and its device, major:minor;
// "" when nothing is mounted at p.
func lastMount(p string) (fstype, dev string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", ""
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		// id parent major:minor root mountpoint options... - fstype source ...
		f := strings.Fields(line)
		if len(f) < 5 || unescapeMount(f[4]) != p {
			continue
		}
		fstype, dev = "", f[2]
		if sep := slices.Index(f, "-"); sep >= 0 && sep+1 < len(f) {
			fstype = f[sep+1]
		}
	}
	return fstype, dev
}

// unescapeMount undoes the octal escapes of the mount tables (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// answerTimeout bounds the wait for a mount to answer statfs, which this
// server answers at once, without asking the store.
const answerTimeout = 3 * time.Second

var errNoAnswer = errors.New("the mount does not answer")

// statfsWithin is statfs(2) on p, given up after d (errNoAnswer): on a FUSE
// mount whose server is stopped or hung the call never returns. The
// goroutine left waiting returns when the mount is aborted.
func statfsWithin(p string, d time.Duration) error {
	done := make(chan error, 1)
	go func() {
		var sfs syscall.Statfs_t
		done <- syscall.Statfs(p, &sfs)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return errNoAnswer
	}
}

// abort ends the FUSE connection of the mount at p, so that every request
// waiting on it fails, and unmounts it. It is the way out of a mount whose
// server hangs, such as a server killed while it was telling the kernel to
// forget an entry: that call waits for a directory lock held by a process
// that waits for the dead server, and the server cannot finish exiting
// until the connection is aborted.
func abort(p string) error {
	if t := mountType(p); t != "fuse" && !strings.HasPrefix(t, "fuse.") {
		return fmt.Errorf("%s is not a FUSE mount (%s): not aborting it", p, t)
	}
	if os.Geteuid() == 0 {
		// With MNT_FORCE, FUSE aborts the connection before unmounting.
		err := syscall.Unmount(p, syscall.MNT_FORCE)
		if errors.Is(err, syscall.EBUSY) {
			err = syscall.Unmount(p, syscall.MNT_DETACH)
		}
		return err
	}
	// A user may abort a connection of theirs through the FUSE control
	// file system, where it is mounted; then detach the mount.
	if conn, ok := fuseConnection(p); ok {
		ctl := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", conn)
		if err := os.WriteFile(ctl, []byte("1"), 0); err != nil {
			slog.Warn("cannot abort the FUSE connection; detaching the mount only", "mountpoint", p, "err", err)
		}
	}
	return detach(p)
}

// fuseConnection returns the number of the FUSE connection behind the
// mount at p, which names it in the FUSE control file system: the device
// number of the mount, always of major 0 for FUSE (fuseblk aside, which
// this refuses).
func fuseConnection(p string) (uint64, bool) {
	t, dev := lastMount(p)
	if t != "fuse" && !strings.HasPrefix(t, "fuse.") {
		return 0, false
	}
	major, minor, ok := strings.Cut(dev, ":")
	v, err := strconv.ParseUint(minor, 10, 32)
	return v, ok && major == "0" && err == nil
}

// detach lazily unmounts p: it works on a stale mount whose server is gone.
func detach(p string) error {
	if os.Geteuid() == 0 {
		return syscall.Unmount(p, syscall.MNT_DETACH)
	}
	out, err := exec.Command("fusermount3", "-u", "-z", p).CombinedOutput()
	if err != nil {
		return fmt.Errorf("fusermount3 -u -z: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

func cmdUnmount(c *cli.Context) error {
	if err := nargs(c, 1, 1); err != nil {
		return err
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	force := c.Bool("force")
	switch err := statfsWithin(mnt, answerTimeout); {
	case errors.Is(err, syscall.ENOTCONN):
		return detach(mnt)
	case errors.Is(err, errNoAnswer) && force:
		return abort(mnt)
	case errors.Is(err, errNoAnswer):
		return fmt.Errorf("%s does not answer (its server is stopped or hung): `theater-storefs unmount --force %s` fails its waiting requests and unmounts it", mnt, mnt)
	}
	if mountType(mnt) == "" {
		return fmt.Errorf("%s is not mounted", mnt)
	}
	if os.Geteuid() != 0 {
		args := []string{"-u", mnt}
		if force {
			args = []string{"-u", "-z", mnt}
		}
		out, err := exec.Command("fusermount3", args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("fusermount3 %s: %s", strings.Join(args, " "), strings.TrimSpace(string(out)))
		}
		return nil
	}
	delay := 5 * time.Millisecond
	for try := 0; ; try++ {
		err = syscall.Unmount(mnt, 0)
		if err == nil || !errors.Is(err, syscall.EBUSY) || try == 6 {
			break
		}
		time.Sleep(delay)
		delay *= 2
	}
	if errors.Is(err, syscall.EBUSY) && force {
		// A mount that answers is never aborted: detached, it serves
		// the files still open and goes when the last is closed.
		err = syscall.Unmount(mnt, syscall.MNT_DETACH)
	}
	if err != nil {
		return fmt.Errorf("unmounting %s: %w", mnt, err)
	}
	return nil
}

// userSetProcs reports whether GOMAXPROCS is set to a value the runtime
// takes (a positive number); it ignores any other.
func userSetProcs() bool {
	n, err := strconv.Atoi(os.Getenv("GOMAXPROCS"))
	return err == nil && n > 0
}
