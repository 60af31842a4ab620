package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// bench holds one run of the harness.
type bench struct {
	cfg *config
	ctx context.Context
	log io.Writer

	root     string // the repository
	dir      string // -dir, absolute
	bin      string // the theater-storefs binary under test
	binDir   string // where a fresh build lives; removed by cleanup
	mntRoot  string // every mountpoint is under it
	logDir   string // the servers' logs
	storeDir string // cached stores
	fsType   string // of dir
	root0    bool   // running as root: cold caches and passthrough possible

	passthrough string // what the cold read showed, for the header
	loadStart   string // the load average when the harness started

	mu      sync.Mutex
	mounts  map[string]*mount // by mountpoint
	scratch []string          // directories removed by cleanup
	rows    []*row
}

// Magic numbers of file systems, from statfs(2).
var fsNames = map[int64]string{
	0xef53:     "ext4",
	0x58465342: "xfs",
	0x9123683e: "btrfs",
	0x01021994: "tmpfs",
	0x858458f6: "ramfs",
	0x794c7630: "overlayfs",
	0x65735546: "fuse",
	0x2fc12fc1: "zfs",
	0x6969:     "nfs",
	0xf2f52010: "f2fs",
}

func (b *bench) setup() error {
	var err error
	if b.root, err = repoRoot(); err != nil {
		return err
	}
	b.dir = b.cfg.dir
	if b.dir == "" {
		b.dir = filepath.Join(b.root, "bench", "out", "mountbench")
	}
	if b.dir, err = filepath.Abs(b.dir); err != nil {
		return err
	}
	// Mountpoints live outside the repository: `go build ./...`, `go vet
	// ./...` and `grep -r .` run there by others would walk into a mount
	// of a million blobs (and hold it busy). The go command skips names
	// starting with "_", so the stores, with their million files, are
	// named so too.
	b.mntRoot = filepath.Join(os.TempDir(), fmt.Sprintf("theater-storefs-mountbench-%08x", crc32.ChecksumIEEE([]byte(b.dir))))
	b.logDir = filepath.Join(b.dir, "_logs")
	b.storeDir = filepath.Join(b.dir, "_stores")
	for _, d := range []string{b.dir, b.mntRoot, b.logDir, b.storeDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var st unix.Statfs_t
	if err := unix.Statfs(b.dir, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", b.dir, err)
	}
	b.fsType = fsNames[int64(st.Type)]
	if b.fsType == "" {
		b.fsType = fmt.Sprintf("fs 0x%x", st.Type)
	}
	switch b.fsType {
	case "tmpfs", "ramfs", "fuse":
		return fmt.Errorf("%s is on %s: give -dir a directory on a real disk", b.dir, b.fsType)
	}
	b.root0 = os.Geteuid() == 0
	b.loadStart = loadAvg()
	// A harness killed hard may have left mounts and scratch directories
	// behind: clear them.
	b.clearStaleMounts()
	b.removeDeadScratch()

	if b.cfg.bin != "" {
		if b.bin, err = filepath.Abs(b.cfg.bin); err != nil {
			return err
		}
		return nil
	}
	b.binDir = filepath.Join(b.dir, fmt.Sprintf("bin-%d", os.Getpid()))
	if err := os.MkdirAll(b.binDir, 0o755); err != nil {
		return err
	}
	b.bin = filepath.Join(b.binDir, "theater-storefs")
	b.progress("go build -o %s %s", b.bin, b.root)
	cmd := exec.CommandContext(b.ctx, "go", "build", "-o", b.bin, ".")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build: %v\n%s", err, out)
	}
	return nil
}

// cleanup unmounts everything this harness mounted and removes its
// scratch directories. It may run twice (defer and second signal).
func (b *bench) cleanup() {
	b.mu.Lock()
	ms := make([]*mount, 0, len(b.mounts))
	for _, m := range b.mounts {
		ms = append(ms, m)
	}
	b.mu.Unlock()
	for _, m := range ms {
		if err := b.unmount(m); err != nil {
			fmt.Fprintf(b.log, "mountbench: %v\n", err)
		}
	}
	if b.mntRoot != "" {
		b.clearStaleMounts()
		// The mountpoints, now empty directories (Remove fails on anything else).
		ents, _ := os.ReadDir(b.mntRoot)
		for _, e := range ents {
			os.Remove(filepath.Join(b.mntRoot, e.Name()))
		}
		os.Remove(b.mntRoot)
	}
	b.mu.Lock()
	dirs := append([]string(nil), b.scratch...)
	b.scratch = nil
	if b.binDir != "" {
		dirs = append(dirs, b.binDir)
		b.binDir = ""
	}
	b.mu.Unlock()
	for _, d := range dirs {
		os.RemoveAll(d)
	}
}

// removeDeadScratch removes the scratch directories (named ...-<pid>) of
// harness runs that are no longer running.
func (b *bench) removeDeadScratch() {
	ents, _ := os.ReadDir(b.dir)
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "bin-") && !strings.HasPrefix(name, "scratch-") {
			continue
		}
		pid, err := strconv.Atoi(name[strings.LastIndexByte(name, '-')+1:])
		if err != nil || pid == os.Getpid() || alive(pid) {
			continue
		}
		os.RemoveAll(filepath.Join(b.dir, name))
	}
}

// clearStaleMounts detaches every mount under mntRoot.
func (b *bench) clearStaleMounts() {
	for _, p := range mountsUnder(b.mntRoot) {
		fmt.Fprintf(b.log, "mountbench: unmounting %s left behind\n", p)
		if err := syscall.Unmount(p, 0); err != nil {
			syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
}

// mountsUnder lists the mountpoints at or under dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		p := unescapeMount(fs[1])
		if p == dir || strings.HasPrefix(p, dir+"/") {
			out = append(out, p)
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// unescapeMount undoes the octal escapes of /proc/mounts (\040 for space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var sb strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				sb.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		sb.WriteByte(s[i])
	}
	return sb.String()
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.log, "mountbench: "+format+"\n", args...)
}

// addScratch registers a directory for removal by cleanup.
func (b *bench) addScratch(d string) {
	b.mu.Lock()
	b.scratch = append(b.scratch, d)
	b.mu.Unlock()
}

// mount is one mounted store and its server.
type mount struct {
	store string
	dir   string
	pid   int           // the server process
	ready time.Duration // how long `theater-storefs mount` took to return
	// answered adds the first stat of by-hash after that: the time until
	// the mount answers.
	answered time.Duration
	// exitWait is how long the server took to exit after unmount.
	exitWait time.Duration
}

// quietCmd makes a command that a terminal's ^C does not reach: mount and
// unmount must run to their end, or a server may be left serving.
func quietCmd(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd
}

// mount mounts store at mnt/<name> with `theater-storefs mount`, which
// returns once the mount answers, and finds the server process.
func (b *bench) mount(store, name string) (*mount, error) {
	if err := b.ctx.Err(); err != nil {
		return nil, err
	}
	mnt := filepath.Join(b.mntRoot, name)
	for _, p := range mountsUnder(mnt) {
		syscall.Unmount(p, syscall.MNT_DETACH)
	}
	if err := os.MkdirAll(mnt, 0o755); err != nil {
		return nil, err
	}
	logFile := filepath.Join(b.logDir, name+".log")
	cmd := quietCmd(b.bin, "--store", store, "mount", "--log-file", logFile, mnt)
	start := time.Now()
	out, err := cmd.CombinedOutput()
	ready := time.Since(start)
	var statErr error
	if err == nil {
		_, statErr = os.Stat(filepath.Join(mnt, "by-hash"))
	}
	answered := time.Since(start)
	if len(mountsUnder(mnt)) > 0 {
		m := &mount{store: store, dir: mnt, ready: ready, answered: answered}
		b.mu.Lock()
		b.mounts[mnt] = m
		b.mu.Unlock()
		if err != nil {
			b.unmount(m)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("theater-storefs mount %s: %v: %s", mnt, err, strings.TrimSpace(string(out)))
	}
	b.mu.Lock()
	m := b.mounts[mnt]
	b.mu.Unlock()
	if m == nil {
		return nil, fmt.Errorf("theater-storefs mount %s returned, but nothing is mounted there", mnt)
	}
	if statErr != nil {
		b.unmount(m)
		return nil, fmt.Errorf("the mount does not answer: %w", statErr)
	}
	if m.pid, err = serverPid(mnt); err != nil {
		b.unmount(m)
		return nil, err
	}
	return m, nil
}

// unmount unmounts m with `theater-storefs unmount` and waits for its
// server to exit. A mount still busy is retried, then detached.
func (b *bench) unmount(m *mount) error {
	b.mu.Lock()
	if b.mounts[m.dir] != m {
		b.mu.Unlock()
		return nil // already done
	}
	delete(b.mounts, m.dir)
	b.mu.Unlock()
	var err error
	for try := 0; try < 5; try++ {
		var out []byte
		out, err = quietCmd(b.bin, "unmount", m.dir).CombinedOutput()
		if err == nil || len(mountsUnder(m.dir)) == 0 {
			err = nil
			break
		}
		err = fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		if derr := syscall.Unmount(m.dir, syscall.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmounting %s: %v; detaching: %v", m.dir, err, derr)
		}
	}
	if m.pid > 0 {
		start := time.Now()
		for alive(m.pid) && time.Since(start) < serverExitWait {
			time.Sleep(10 * time.Millisecond)
		}
		m.exitWait = time.Since(start)
		if alive(m.pid) {
			// The mount is gone: nothing is left for it to serve.
			syscall.Kill(m.pid, syscall.SIGKILL)
			return fmt.Errorf("the server of %s (pid %d) was still running %s after unmount; killed it", m.dir, m.pid, serverExitWait)
		}
	}
	return nil
}

// serverExitWait is how long a server may take to exit after its mount is
// gone (it may have a million inodes to forget).
const serverExitWait = 60 * time.Second

// alive reports whether pid is a live process (not a zombie).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i < 0 || i+2 >= len(b) || (b[i+2] != 'Z' && b[i+2] != 'X')
}

// serverPid finds the server of the mount at mnt: the process whose
// command line is `theater-storefs ... mount --foreground ... MNT`.
func serverPid(mnt string) (int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(cl) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(cl), "\x00"), "\x00")
		if isServer(args, mnt) {
			return pid, nil
		}
	}
	return 0, fmt.Errorf("no server process for %s in /proc/*/cmdline", mnt)
}

// isServer reports whether a command line is the server of mnt.
func isServer(args []string, mnt string) bool {
	if len(args) < 3 || args[len(args)-1] != mnt {
		return false
	}
	var sawMount, sawFg bool
	for _, a := range args[1:] {
		switch a {
		case "mount":
			sawMount = true
		case "--foreground", "-f":
			sawFg = true
		}
	}
	return sawMount && sawFg
}

// procField reads one "Name: value" field of a /proc/<pid> file, as an
// integer; kB values are returned in bytes.
func procField(pid int, file, name string) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/%s", pid, file))
	if err != nil {
		return 0, err
	}
	return parseProcField(data, name)
}

func parseProcField(data []byte, name string) (int64, error) {
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k != name {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			break
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, v, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		return n, nil
	}
	return 0, fmt.Errorf("no %s field", name)
}

// peakRSS is the server's VmHWM, in bytes.
func peakRSS(pid int) (int64, error) { return procField(pid, "status", "VmHWM") }

// readSyscalls counts the server's read system calls: each FUSE request
// the server receives is one read of /dev/fuse.
func readSyscalls(pid int) (int64, error) { return procField(pid, "io", "syscr") }

// dropCaches writes back dirty pages and drops the page cache, dentries
// and inodes.
func dropCaches() error {
	syscall.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return fmt.Errorf("dropping caches: %w", err)
	}
	return nil
}

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) > 3 {
		f = f[:3]
	}
	return strings.Join(f, " ")
}

// kernelRelease is uname -r.
func kernelRelease() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
