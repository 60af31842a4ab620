package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// longEnv runs the long versions of the soak tests (`make soak`): 50 kills
// in the crash loop, a minute of concurrent writers.
const longEnv = "THEATER_STOREFS_LONG"

func longRun() bool { return os.Getenv(longEnv) != "" }

// seedEnv fixes the random choices of the soak tests, to replay a run; each
// test logs the seed it used.
const seedEnv = "THEATER_STOREFS_SEED"

func testSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv(seedEnv); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("%s=%q: %v", seedEnv, s, err)
		}
		seed = v
	}
	t.Logf("random seed %d (replay with %s=%d)", seed, seedEnv, seed)
	return seed
}

// fsyncWriterMode makes the helper process (see helperEnv) a writer that
// fsyncs: each line "DST\tSRC" on stdin copies SRC's content into DST
// (opened O_WRONLY|O_CREAT|O_TRUNC), fsyncs and closes it, and answers one
// line: "ok" (fsync and close returned success), "synced" (fsync did,
// close failed), or "error: ..." (not written for sure). Unlike the holder
// it keeps going after an error: the mount dies under it on purpose.
const fsyncWriterMode = "fsync-writer"

func fsyncWriter() int {
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		dst, src, ok := strings.Cut(in.Text(), "\t")
		if !ok {
			fmt.Println("error: want DST<tab>SRC")
			continue
		}
		fmt.Println(fsyncWrite(dst, src))
	}
	return 0
}

func fsyncWrite(dst, src string) string {
	b, err := os.ReadFile(src)
	if err != nil {
		return "error: " + err.Error()
	}
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "error: " + err.Error()
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return "error: " + err.Error()
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return "error: fsync: " + err.Error()
	}
	if err := f.Close(); err != nil {
		return "synced"
	}
	return "ok"
}

// fsyncClient drives one fsync-writer helper process.
type fsyncClient struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out chan string
}

func startFsyncWriter(t *testing.T) *fsyncClient {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"="+fsyncWriterMode)
	in, stdout := startHelper(t, cmd)
	c := &fsyncClient{cmd: cmd, in: in, out: make(chan string)}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.out <- sc.Text()
		}
		close(c.out)
	}()
	return c
}

// write asks the helper to write src's content to dst with fsync, and
// reports whether the write was acknowledged: fsync returned success.
func (c *fsyncClient) write(dst, src string) (acked bool, reply string) {
	if _, err := fmt.Fprintf(c.in, "%s\t%s\n", dst, src); err != nil {
		return false, "error: " + err.Error()
	}
	select {
	case reply, ok := <-c.out:
		if !ok {
			return false, "error: the helper exited"
		}
		return reply == "ok" || reply == "synced", reply
	case <-time.After(cmdTimeout):
		c.cmd.Process.Kill()
		return false, "error: no answer within " + cmdTimeout.String() + " (the mount hangs?)"
	}
}

// crashLabel is one label the crash loop writes, with every write tried on
// it in order. Writes to a label are serialized (mu), so "the last
// acknowledged write" is well defined.
type crashLabel struct {
	name   string
	append bool // written with `put --label` (no --replace): refs accumulate

	mu       sync.Mutex
	attempts []crashAttempt
}

type crashAttempt struct {
	hash   string
	acked  bool
	writer string
}

// crashFigures are the crash loop's results.
type crashFigures struct {
	kills, attempted, acked int
	lost, torn, missingBlob int // acknowledged writes gone; label files not hashes joined by \n; refs to no blob
	foreign                 int // labels holding content no writer wrote, or refs out of order
	badBlobs, strays        int // blobs not hashing to their name; temp or odd files in data/ or labels/
	leftovers               int // files other than `verified` in tmp/ after the remount
	mountMismatch           int // labels reading through the mount otherwise than the store says
	// hung counts kills after which the mount did not answer and needed
	// unmount --force: the kernel held a thread of the dead server (one
	// telling it to forget an entry, waiting for a directory lock that a
	// process waiting on the server held). Not a failure: nothing is lost,
	// and the recovery is the documented one.
	hung        int
	maxRecovery time.Duration
}

func (f crashFigures) String() string {
	return fmt.Sprintf("kills %d, writes tried %d, acknowledged %d; lost %d, torn labels %d, refs to missing blobs %d, foreign content %d, bad blobs %d, temp files in data/ or labels/ %d, tmp/ leftovers after remount %d, mount disagreeing with store %d; hung mounts recovered by unmount --force %d; slowest recovery %v",
		f.kills, f.attempted, f.acked, f.lost, f.torn, f.missingBlob, f.foreign, f.badBlobs, f.strays, f.leftovers, f.mountMismatch, f.hung, f.maxRecovery.Round(time.Millisecond))
}

// crashLoop is the state shared by the writers and the killer.
type crashLoop struct {
	t       *testing.T
	store   string
	mnt     string
	scratch string
	echoBin string // the external echo, whose exit status includes close's

	// gate: writers hold it shared around each write; the killer takes it
	// to stop them while it remounts and audits.
	gate sync.RWMutex
	stop atomic.Bool

	labels    sync.Map // name -> *crashLabel
	newLabels atomic.Int64

	cliMu   sync.Mutex
	cliPIDs map[int]bool // CLI writers running now

	// Label-less puts (claimed spools, one flush each): their hashes,
	// attempted and acknowledged.
	bareMu          sync.Mutex
	bareTried, bare []string

	checked map[string]int64 // blobs already hashed true: name -> size
}

func (c *crashLoop) label(name string, appendMode bool) *crashLabel {
	l, _ := c.labels.LoadOrStore(name, &crashLabel{name: name, append: appendMode})
	return l.(*crashLabel)
}

// content makes a unique content for a write, mostly small, sometimes 64
// KiB, rarely over the 1 MiB from which a writer fsyncs its own spool.
func content(r *rand.Rand, label string, seq int, big bool) []byte {
	b := fmt.Appendf(nil, "%s #%d %016x\n", label, seq, r.Uint64())
	pad := 0
	switch n := r.IntN(100); {
	case big && n < 3:
		pad = 1<<20 + r.IntN(1<<19)
	case big && n < 12:
		pad = 64 << 10
	case n < 50:
		pad = r.IntN(4096)
	}
	if pad > 0 {
		chunk := fmt.Appendf(nil, "%x", r.Uint64())
		for len(b) < pad {
			b = append(b, chunk...)
		}
		b = append(b, '\n')
	}
	return b
}

// TestCrashLoop: writers store and label content through the mount (echo
// and cp run by sh, fsync'd writes from a helper process) and beside it
// (`theater-storefs put --label`), while the server is killed with SIGKILL
// at random moments, 5 times (50 with THEATER_STOREFS_LONG=1, `make
// soak`). After each kill `theater-storefs mount` on the stale mountpoint
// recovers it, and the store is audited: every acknowledged write (close or
// fsync returned success, the CLI exited 0) is there, or a later write of
// the same label; no label file is torn or names a missing blob; every
// blob hashes to its name; no temp file shows in data/ or labels/; tmp/
// holds nothing but `verified`; the mount reads what the store holds.
func TestCrashLoop(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	kills, minRun, maxRun := 5, 300*time.Millisecond, 900*time.Millisecond
	if longRun() {
		kills, minRun, maxRun = 50, 200*time.Millisecond, 2*time.Second
	}
	seed := testSeed(t)
	r := rand.New(rand.NewPCG(seed, 0))
	echoBin, err := exec.LookPath("echo")
	if err != nil {
		t.Fatal(err)
	}
	c := &crashLoop{
		t: t, store: emptyStore(t), mnt: newMountpoint(t), scratch: t.TempDir(),
		echoBin: echoBin, cliPIDs: map[int]bool{}, checked: map[string]int64{},
	}
	logFile := mountAt(t, c.store, c.mnt)
	fw := startFsyncWriter(t)

	type writer struct {
		name string
		own  []string // labels only this writer writes
		fn   func(l *crashLabel, src string) bool
		big  bool
		mint string // prefix of new labels this writer creates
	}
	own := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s/%d", prefix, i))
		}
		return out
	}
	writers := []writer{
		// The builtin echo: sh never sees the final close's result (it
		// is a dup2), so the script reads the label back to know.
		{name: "sh-echo", own: own("sh-echo", 3), fn: c.shEcho},
		{name: "sh-binecho", own: own("sh-binecho", 3), fn: c.shBinEcho},
		{name: "sh-cp", own: own("sh-cp", 3), fn: c.shCp, big: true, mint: "cp-new"},
		{name: "fsync", own: own("fsync", 3), fn: func(l *crashLabel, src string) bool {
			ok, _ := fw.write(filepath.Join(c.mnt, "by-label", l.name), src)
			return ok
		}, big: true, mint: "fsync-new"},
		{name: "cli-replace", own: own("cli/replace", 2), fn: c.cliPut(true), big: true},
		{name: "cli-append", own: own("cli/append", 2), fn: c.cliPut(false)},
	}
	shared := []string{"shared/0", "shared/1"} // every writer but cli-append
	for _, w := range writers {
		for _, n := range w.own {
			c.label(n, w.name == "cli-append")
		}
	}
	for _, n := range shared {
		c.label(n, false)
	}
	// Namespaces are directories: made first, as on any file system.
	mustSh(t, c.mnt, "mkdir -p by-label/sh-echo by-label/sh-binecho by-label/sh-cp by-label/cp-new by-label/fsync by-label/fsync-new by-label/shared")

	var wg sync.WaitGroup
	for wi, w := range writers {
		wr := rand.New(rand.NewPCG(seed, uint64(wi+1)))
		wg.Go(func() {
			for seq := 0; !c.stop.Load(); seq++ {
				var l *crashLabel
				switch n := wr.IntN(10); {
				case n == 0 && w.mint != "":
					l = c.label(fmt.Sprintf("%s/%d", w.mint, c.newLabels.Add(1)), false)
				case n == 1 && w.name != "cli-append":
					l = c.label(shared[wr.IntN(len(shared))], false)
				default:
					l = c.label(w.own[wr.IntN(len(w.own))], w.name == "cli-append")
				}
				body := content(wr, l.name, seq, w.big)
				ok, stopped := c.attempt(fmt.Sprintf("%s-%d", w.name, seq), body, func(src string) bool {
					l.mu.Lock()
					defer l.mu.Unlock()
					i := len(l.attempts)
					l.attempts = append(l.attempts, crashAttempt{hash: sha1Hex(body), writer: w.name})
					ok := w.fn(l, src)
					l.attempts[i].acked = ok
					return ok
				})
				if stopped {
					return
				}
				if !ok {
					time.Sleep(time.Duration(10+wr.IntN(20)) * time.Millisecond) // the mount is down
				}
			}
		})
	}

	wg.Go(func() { c.barePuts(rand.New(rand.NewPCG(seed, uint64(len(writers)+1)))) })

	var fig crashFigures
	stopWriters := func() {
		if !c.stop.Swap(true) {
			wg.Wait()
		}
	}
	t.Cleanup(stopWriters)
	for k := 1; k <= kills && !t.Failed(); k++ {
		time.Sleep(minRun + time.Duration(r.Int64N(int64(maxRun-minRun))))
		pid := serverPID(t, c.mnt)
		killedAt := time.Now()
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if k%2 == 0 {
			c.killCLIs() // a put caught half-way leaves a spool behind
		}
		c.recover(k, pid, killedAt, logFile, &fig)
	}
	stopWriters()
	c.audit(&fig, true)
	c.labels.Range(func(_, v any) bool {
		for _, a := range v.(*crashLabel).attempts {
			fig.attempted++
			if a.acked {
				fig.acked++
			}
		}
		return true
	})
	fig.attempted += len(c.bareTried)
	fig.acked += len(c.bare)
	t.Logf("crash loop: %s", fig)
	perWriter := map[string][2]int{"cli-put": {len(c.bareTried), len(c.bare)}}
	c.labels.Range(func(_, v any) bool {
		for _, a := range v.(*crashLabel).attempts {
			n := perWriter[a.writer]
			n[0]++
			if a.acked {
				n[1]++
			}
			perWriter[a.writer] = n
		}
		return true
	})
	t.Logf("per writer (tried, acknowledged): %v", perWriter)
	if fig.acked < 10*fig.kills/2 {
		t.Errorf("only %d writes acknowledged over %d kills: the writers did not get going", fig.acked, fig.kills)
	}
	if r := fsck(t, c.store); r.code != 0 {
		t.Errorf("fsck after the crash loop: want exit 0:\n%s", r)
	}
}

// recover stops the writers, remounts on the stale mountpoint left by the
// killed server pid, audits the store and lets the writers go on.
func (c *crashLoop) recover(k, pid int, killedAt time.Time, logFile string, fig *crashFigures) {
	t := c.t
	c.gate.Lock()
	defer c.gate.Unlock() // also on t.Fatal: the writers wait on it
	if !waitExit(pid, exitTimeout) {
		t.Fatalf("kill %d: server %d survived SIGKILL", k, pid)
	}
	fig.kills++
	// The same commands a user would type, on the stale mountpoint.
	mount := func() result {
		return cli(t, "--verbose", "--store", c.store, "mount", "--log-file", logFile, c.mnt)
	}
	res := mount()
	if res.code != 0 && strings.Contains(res.stderr, "does not answer") {
		fig.hung++
		t.Logf("kill %d: the mount does not answer; unmount --force", k)
		if r := cli(t, "unmount", "--force", c.mnt); r.code != 0 {
			t.Fatalf("kill %d: unmount --force: %s", k, r)
		}
		if !gone(pid, exitTimeout) {
			t.Fatalf("kill %d: server %d still there after unmount --force", k, pid)
		}
		res = mount()
	}
	if res.code != 0 {
		t.Fatalf("kill %d: mount on the stale mountpoint failed:\n%s", k, res)
	}
	if d := time.Since(killedAt); d > fig.maxRecovery {
		fig.maxRecovery = d
	}
	if n := len(mountsAt(c.mnt)); n != 1 {
		t.Errorf("kill %d: %d mounts at %s after recovering, want 1", k, n, c.mnt)
	}
	c.audit(fig, false)
}

func (c *crashLoop) sh(script string) bool {
	r, err := tryRun(cmdTimeout, "/", c.mnt, "sh", "-c", script)
	if err != nil {
		c.t.Errorf("%s: %v (stderr %q)", r.cmd, err, r.stderr)
	}
	return err == nil && r.code == 0
}

func (c *crashLoop) path(l *crashLabel) string { return q(filepath.Join(c.mnt, "by-label", l.name)) }

func (c *crashLoop) shEcho(l *crashLabel, src string) bool {
	b, _ := os.ReadFile(src)
	v := q(strings.TrimSuffix(string(b), "\n"))
	return c.sh(fmt.Sprintf(`echo %s > %s && [ "$(cat %s)" = %s ]`, v, c.path(l), c.path(l), v))
}

func (c *crashLoop) shBinEcho(l *crashLabel, src string) bool {
	b, _ := os.ReadFile(src)
	return c.sh(fmt.Sprintf(`%s -n %s > %s`, q(c.echoBin), q(string(b)), c.path(l)))
}

func (c *crashLoop) shCp(l *crashLabel, src string) bool {
	return c.sh(fmt.Sprintf("cp %s %s", q(src), c.path(l)))
}

// cliPut stores src with `put --label`, replacing the label or appending to
// it; acknowledged when it exits 0 printing the hash.
func (c *crashLoop) cliPut(replace bool) func(*crashLabel, string) bool {
	return func(l *crashLabel, src string) bool {
		args := []string{"put", "--label", l.name}
		if replace {
			args = append(args, "--replace")
		}
		return c.runPut(args, src)
	}
}

// runPut runs `put ARGS src` on the store, killable by killCLIs; it is
// acknowledged when it exits 0 printing src's hash.
func (c *crashLoop) runPut(args []string, src string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := command(ctx, "/", "", bin, append(append([]string{"--store", c.store}, args...), src)...)
	var out strings.Builder
	cmd.Stdout = &out
	c.cliMu.Lock()
	err := cmd.Start()
	if err == nil {
		c.cliPIDs[cmd.Process.Pid] = true
	}
	c.cliMu.Unlock()
	if err != nil {
		c.t.Error(err)
		return false
	}
	err = cmd.Wait()
	c.cliMu.Lock()
	delete(c.cliPIDs, cmd.Process.Pid)
	c.cliMu.Unlock()
	if ctx.Err() != nil {
		c.t.Errorf("%s: no exit within %v", strings.Join(args, " "), cmdTimeout)
	}
	b, _ := os.ReadFile(src)
	return err == nil && strings.TrimSpace(out.String()) == sha1Hex(b)
}

// barePuts stores new content with a label-less `put` until the loop
// stops: each is acknowledged after one flush, its link into data/ made
// durable by a later one, so a kill in between must find it put back.
func (c *crashLoop) barePuts(r *rand.Rand) {
	for seq := 0; ; seq++ {
		body := content(r, "bare", seq, false)
		ok, stopped := c.attempt(fmt.Sprintf("bare-%d", seq), body, func(src string) bool {
			return c.runPut([]string{"put"}, src)
		})
		if stopped {
			return
		}
		c.bareMu.Lock()
		c.bareTried = append(c.bareTried, sha1Hex(body))
		if ok {
			c.bare = append(c.bare, sha1Hex(body))
		}
		c.bareMu.Unlock()
	}
}

// attempt writes body to a scratch file called name and runs write on it,
// holding the gate shared; stopped says the loop is ending (or the file
// could not be written), and nothing was run.
func (c *crashLoop) attempt(name string, body []byte, write func(src string) bool) (ok, stopped bool) {
	src := filepath.Join(c.scratch, name)
	if err := os.WriteFile(src, body, 0o644); err != nil {
		c.t.Error(err)
		return false, true
	}
	defer os.Remove(src)
	c.gate.RLock()
	defer c.gate.RUnlock()
	if c.stop.Load() {
		return false, true
	}
	return write(src), false
}

// killCLIs kills the CLI writers running now.
func (c *crashLoop) killCLIs() {
	c.cliMu.Lock()
	defer c.cliMu.Unlock()
	for pid := range c.cliPIDs {
		syscall.Kill(-pid, syscall.SIGKILL)
	}
}

// audit checks the store (writers stopped) and adds what it finds to fig.
// full rehashes every blob; otherwise only blobs not hashed before.
func (c *crashLoop) audit(fig *crashFigures, full bool) {
	t := c.t
	t.Helper()
	problem := func(count *int, format string, args ...any) {
		t.Helper()
		*count++
		t.Errorf(format, args...)
	}

	// data/: every entry a blob named by the hash of its content.
	ents, err := os.ReadDir(filepath.Join(c.store, "data"))
	if err != nil {
		t.Fatal(err)
	}
	blobs := map[string]bool{}
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !hashRE.MatchString(name) {
			problem(&fig.strays, "data/%s: not a blob (%v)", name, e.Type())
			continue
		}
		blobs[name] = true
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if size, ok := c.checked[name]; ok && size == fi.Size() && !full {
			continue
		}
		b, err := os.ReadFile(filepath.Join(c.store, "data", name))
		if err != nil {
			t.Fatal(err)
		}
		if h := sha1Hex(b); h != name {
			problem(&fig.badBlobs, "data/%s: content hashes to %s (%d bytes)", name, h, len(b))
			continue
		}
		c.checked[name] = fi.Size()
	}

	// labels/: only the labels written, each hashes joined by \n.
	files := map[string][]string{}
	labelsDir := filepath.Join(c.store, "labels")
	err = filepath.WalkDir(labelsDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(labelsDir, p)
		switch {
		case d.IsDir():
			return nil
		case !d.Type().IsRegular():
			problem(&fig.strays, "labels/%s: not a regular file (%v)", rel, d.Type())
			return nil
		}
		if _, ok := c.labels.Load(rel); !ok {
			problem(&fig.strays, "labels/%s: no writer wrote this label (a temp file?)", rel)
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		refs := strings.Split(string(b), "\n")
		for i, h := range refs {
			switch {
			case !hashRE.MatchString(h):
				problem(&fig.torn, "labels/%s: line %d is %q, not a hash (file %q)", rel, i+1, h, abbrev(b))
			case slices.Contains(refs[:i], h):
				problem(&fig.torn, "labels/%s: duplicate ref %s", rel, h)
			case !blobs[h]:
				problem(&fig.missingBlob, "labels/%s: ref %s names no blob in data/", rel, h)
			}
		}
		files[rel] = refs
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// tmp/: the remount's Open cleared what the dead server and killed
	// CLIs left; handles the kernel releases late empty in a moment.
	var left []string
	deadline := time.Now().Add(3 * time.Second)
	for {
		left = left[:0]
		ents, err := os.ReadDir(filepath.Join(c.store, "tmp"))
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			t.Fatal(err)
		}
		for _, e := range ents {
			if e.Name() != "verified" {
				left = append(left, e.Name())
			}
		}
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(left) > 0 {
		problem(&fig.leftovers, "tmp/ after the remount holds %q besides verified", left)
	}

	// Every acknowledged label-less put is in data/.
	c.bareMu.Lock()
	for _, h := range c.bare {
		if !blobs[h] {
			problem(&fig.lost, "data/%s: acknowledged label-less put lost", h)
		}
	}
	c.bareMu.Unlock()

	// Every acknowledged write is there, or a later write of its label.
	c.labels.Range(func(_, v any) bool {
		l := v.(*crashLabel)
		l.mu.Lock()
		defer l.mu.Unlock()
		refs, exists := files[l.name]
		last := -1
		at := map[string]int{}
		for i, a := range l.attempts {
			at[a.hash] = i
			if a.acked {
				last = i
			}
		}
		ackedIn := func(from, to int) (n int) { // acknowledged writes in (from, to]
			for i := from + 1; i <= to; i++ {
				if l.attempts[i].acked {
					n++
				}
			}
			return n
		}
		switch {
		case l.append:
			prev := -1
			for _, h := range refs {
				i, ok := at[h]
				if !ok || i < prev {
					problem(&fig.foreign, "labels/%s: ref %s is no write of this label, or out of order (refs %q)", l.name, h, refs)
					continue
				}
				prev = i
			}
			for i, a := range l.attempts {
				if a.acked && !slices.Contains(refs, a.hash) {
					problem(&fig.lost, "labels/%s: acknowledged write #%d (%s, %s) lost; refs %q", l.name, i, a.hash, a.writer, refs)
				}
			}
		case !exists:
			if last >= 0 {
				fig.lost += ackedIn(-1, last) - 1
				problem(&fig.lost, "labels/%s: missing, after %d acknowledged writes", l.name, ackedIn(-1, last))
			}
		case len(refs) != 1:
			problem(&fig.foreign, "labels/%s: holds %d refs, want the one of the last write", l.name, len(refs))
		default:
			i, ok := at[refs[0]]
			switch {
			case !ok:
				problem(&fig.foreign, "labels/%s: holds %s, which no writer wrote to it", l.name, refs[0])
			case i < last:
				fig.lost += ackedIn(i, last) - 1
				problem(&fig.lost, "labels/%s: holds write #%d (%s); acknowledged write #%d (%s) and %d before it since are lost",
					l.name, i, l.attempts[i].writer, last, l.attempts[last].writer, ackedIn(i, last)-1)
			}
		}
		return true
	})

	// The mount reads what the store holds.
	for name, refs := range files {
		want, err := os.ReadFile(filepath.Join(c.store, "data", refs[len(refs)-1]))
		if err != nil {
			continue // reported above
		}
		var got []byte
		err = within(t, cmdTimeout, func() error {
			var err error
			got, err = os.ReadFile(filepath.Join(c.mnt, "by-label", name))
			return err
		})
		if err != nil || string(got) != string(want) {
			problem(&fig.mountMismatch, "by-label/%s through the recovered mount: %q, %v; the store holds %q", name, abbrev(got), err, abbrev(want))
		}
	}
}
