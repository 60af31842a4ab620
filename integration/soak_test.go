package integration

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// serverUsage is what a server process holds: its descriptors (and those
// on files of the store other than its directories and tmp/verified: open
// blobs, spools, label files) and its threads.
type serverUsage struct {
	fds, storeFds, threads int
	open                   []string // the store fds, for messages
	all                    []string // every fd and what it is open on
}

func usageOf(t *testing.T, pid int, store string) serverUsage {
	t.Helper()
	var u serverUsage
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("server %d: %v", pid, err)
	}
	u.fds = len(ents)
	for _, e := range ents {
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		u.all = append(u.all, e.Name()+" -> "+target)
		rel, ok := strings.CutPrefix(strings.TrimSuffix(target, " (deleted)"), store+"/")
		if !ok {
			continue
		}
		switch rel {
		case "data", "labels", "tmp", "tmp/verified":
			continue
		}
		u.storeFds++
		u.open = append(u.open, rel)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			u.threads, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return u
}

// settle waits (up to a deadline) for the server's usage to come back to
// base: handles are released by the kernel a moment after the last close.
// It returns the last usage seen.
func settle(t *testing.T, pid int, store string, base serverUsage, fdSlack, threadSlack int) serverUsage {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		u := usageOf(t, pid, store)
		if (u.fds <= base.fds+fdSlack && u.storeFds == 0 && u.threads <= base.threads+threadSlack) || time.Now().After(deadline) {
			return u
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setOf(s []string) map[string]bool {
	m := map[string]bool{}
	for _, v := range s {
		m[v] = true
	}
	return m
}

// soakLine is every line the soak writers write: writer, sequence, padding.
var soakLine = regexp.MustCompile(`^w([0-9]+)-[0-9]+-x*$`)

// TestConcurrencySoak: 16 shells write labels for 5 seconds (60 with
// THEATER_STOREFS_LONG=1, `make soak`): 8 of them share one label and each
// has one of its own, with echo >, >>, cp, mv over, rm and cat in a random
// order. Afterwards every label names a complete blob that hashes to its
// name and holds whole lines as written, fsck is clean, and the server
// holds no more descriptors than before (none on a blob, spool or label
// file) and no more threads than before, within a small slack.
func TestConcurrencySoak(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	warmup, soak := time.Second, 5*time.Second
	if longRun() {
		warmup, soak = 5*time.Second, 60*time.Second
	}
	r := rand.New(rand.NewPCG(testSeed(t), 0))
	store := emptyStore(t)
	mnt := mountStore(t, store)
	pid := serverPID(t, mnt)
	scratch := t.TempDir()
	mustSh(t, mnt, "mkdir by-label/own && echo start > by-label/same")
	start := usageOf(t, pid, store)

	const writers = 16
	ops := []string{"echo", "append", "cp", "mv", "rm", "cat"}
	var scripts []string
	for w := range writers {
		var cases []string
		for slot := range 24 {
			label := fmt.Sprintf("by-label/own/w%d", w)
			if w < writers/2 && slot%2 == 0 {
				label = "by-label/same"
			}
			line := fmt.Sprintf(`"w%d-$i-$pad%d"`, w, r.IntN(5))
			tmp := fmt.Sprintf("by-label/tmp-w%d", w)
			src := q(filepath.Join(scratch, fmt.Sprintf("src-w%d", w)))
			var op string
			switch ops[r.IntN(len(ops))] {
			case "echo":
				op = fmt.Sprintf("echo %s > %s", line, label)
			case "append":
				op = fmt.Sprintf("echo %s >> %s", line, label)
			case "cp":
				op = fmt.Sprintf("echo %s > %s && cp %s %s", line, src, src, label)
			case "mv":
				op = fmt.Sprintf("echo %s > %s && mv -f %s %s", line, tmp, tmp, label)
			case "rm":
				op = "rm -f " + label
			case "cat":
				op = "cat " + label + " > /dev/null"
			}
			cases = append(cases, fmt.Sprintf("%d) %s ;;", slot, op))
		}
		// Lines of 0 to 70000 bytes: $pad0 to $pad4.
		pads := `pad0=; pad1=$(head -c 10 /dev/zero | tr '\0' x); pad2=$(head -c 100 /dev/zero | tr '\0' x)
pad3=$(head -c 3000 /dev/zero | tr '\0' x); pad4=$(head -c 70000 /dev/zero | tr '\0' x)
`
		scripts = append(scripts, pads+fmt.Sprintf("i=0\nwhile [ ! -e %s ]; do\n i=$((i+1))\n case $((i %% 24)) in\n %s\n esac\ndone\necho $i",
			q(filepath.Join(scratch, "stop")), strings.Join(cases, "\n ")))
	}

	run := func(d time.Duration) (iterations int, errs []string) {
		t.Helper()
		stop := filepath.Join(scratch, "stop")
		os.Remove(stop)
		ctx, cancel := context.WithTimeout(context.Background(), d+concurrentTimeout)
		defer cancel()
		results := make([]result, len(scripts))
		var wg sync.WaitGroup
		for i, s := range scripts {
			wg.Go(func() {
				cmd := command(ctx, "/", mnt, "sh", "-c", inDir(mnt, s))
				var stdout, stderr bytes.Buffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				err := cmd.Run()
				results[i] = result{cmd: fmt.Sprintf("writer %d", i), stdout: stdout.String(), stderr: stderr.String()}
				if err != nil {
					results[i].code = -1
					results[i].stderr += "\n" + err.Error()
				}
			})
		}
		time.Sleep(d)
		if err := os.WriteFile(stop, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if ctx.Err() != nil {
			t.Fatalf("the writers did not stop within %v of being told: the mount hangs (deadlock?)", concurrentTimeout)
		}
		for _, res := range results {
			if res.code != 0 {
				t.Errorf("%s:\n%s", res.cmd, abbrevResult(res))
			}
			n, _ := strconv.Atoi(strings.TrimSpace(res.stdout))
			iterations += n
			errs = append(errs, lines(res.stderr)...)
		}
		return iterations, errs
	}

	// A warm-up brings the server to the threads this load needs.
	t0 := time.Now()
	run(warmup)
	base := settle(t, pid, store, serverUsage{fds: 1 << 20}, 0, 1<<20)
	time.Sleep(200 * time.Millisecond) // for what the kernel releases last
	t1 := time.Now()
	iterations, errs := run(soak)
	t2 := time.Now()
	after := settle(t, pid, store, base, 2, 8)
	t.Logf("timing: warm-up %v, soak %v, settle %v", t1.Sub(t0), t2.Sub(t1), time.Since(t2))
	t.Logf("concurrency soak: %d writers, %v: %d operations; server fds %d at start, %d after warm-up, %d after (on store files: %d), threads %d, %d, %d",
		writers, soak, iterations, start.fds, base.fds, after.fds, after.storeFds, start.threads, base.threads, after.threads)
	if added := difference(setOf(after.all), setOf(base.all)); len(added) > 0 {
		t.Logf("descriptors the server opened during the soak and holds: %q", slices.Sorted(maps.Keys(added)))
	}
	if after.fds > base.fds+2 || after.storeFds != 0 {
		t.Errorf("the server holds %d descriptors after the soak, %d before (slack 2); on store files: %q; before: %q; after: %q",
			after.fds, base.fds, after.open, base.all, after.all)
	}
	// Go keeps the threads it made for blocking system calls: some growth
	// with the load is no leak. Handles or requests stuck in the server
	// would show as many more.
	if after.threads > base.threads+8 {
		t.Errorf("the server runs %d threads after the soak, %d before (slack 8)", after.threads, base.threads)
	}

	// Failures: ENOENT from cat of a label just removed, and from racing
	// with another writer's rm or mv of the shared label, are expected;
	// anything else (EIO, a failed write to a label only one writer uses)
	// is not.
	tolerated := map[string]int{}
	unexpected := map[string]int{}
	for _, e := range errs {
		shared := strings.Contains(e, "by-label/same")
		switch {
		case strings.HasSuffix(e, "No such file or directory") && (strings.HasPrefix(e, "cat: ") || shared),
			// cp opens a destination it found missing with O_EXCL.
			strings.HasPrefix(e, "cp: ") && strings.HasSuffix(e, "File exists") && shared,
			// open(O_CREAT) failing with ENOENT: TestCreateRacingRemove.
			strings.HasSuffix(e, "cannot create by-label/same: Directory nonexistent"):
			where := "own label"
			if shared {
				where = "shared label"
			}
			tolerated[fmt.Sprintf("%s: %s (%s)", e[:strings.Index(e, ":")], e[strings.LastIndex(e, ": ")+2:], where)]++
			continue
		}
		unexpected[e]++
	}
	for e, n := range unexpected {
		t.Errorf("%d times: %s", n, e)
	}
	if len(tolerated) > 0 {
		t.Logf("tolerated failures: %v", tolerated)
	}

	st := checkStore(t, store) // blobs hash true, labels name existing blobs, tmp/ clean
	whole := func(b []byte) error {
		if len(b) == 0 {
			return nil
		}
		if b[len(b)-1] != '\n' {
			return fmt.Errorf("does not end with a newline")
		}
		for l := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
			if !soakLine.MatchString(l) && l != "start" {
				return fmt.Errorf("line %q is no line a writer wrote", abbrev([]byte(l)))
			}
		}
		return nil
	}
	for h, b := range st.blobs {
		if err := whole(b); err != nil {
			t.Errorf("data/%s: %v", h, err)
		}
	}
	for name, refs := range st.labels {
		if strings.Contains(refs, "\n") {
			t.Errorf("labels/%s holds several refs %q; writes through the mount replace", name, refs)
		}
		w, ok := strings.CutPrefix(name, "own/w")
		if !ok {
			continue
		}
		for l := range strings.SplitSeq(strings.TrimSuffix(string(st.blobs[refs]), "\n"), "\n") {
			if m := soakLine.FindStringSubmatch(l); m != nil && m[1] != w {
				t.Errorf("labels/%s holds a line of writer %s: %q", name, m[1], abbrev([]byte(l)))
			}
		}
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range st.labels {
			if !yield(n) {
				return
			}
		}
	})
	t.Logf("after the soak: %d labels %q, %d blobs", len(names), names, len(st.blobs))
	mustFsck(t, store)
}

// TestCreateRacingRemove: open(O_CREAT) never fails with ENOENT in a
// directory that exists, whatever another process removes meanwhile: on any
// file system, `echo x > label` creates the label if it is gone. Here one
// shell writes a label with > and >> while another removes it.
func TestCreateRacingRemove(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)
	done := filepath.Join(t.TempDir(), "done")
	results := runScripts(t, mnt, []string{
		fmt.Sprintf(`fail=0; for i in $(seq 300); do echo w$i > by-label/r || fail=$((fail+1)); echo a$i >> by-label/r || fail=$((fail+1)); done; touch %s; exit $fail`, q(done)),
		fmt.Sprintf(`while [ ! -e %s ]; do rm -f by-label/r; done`, q(done)),
	})
	if r := results[0]; r.code != 0 {
		errs := map[string]int{}
		for _, l := range lines(r.stderr) {
			errs[l[strings.LastIndex(l, ": ")+2:]]++
		}
		t.Errorf("%d of 600 writes racing with rm failed: %v; want none (open with O_CREAT creates the label)", r.code, errs)
	}
	if r := results[1]; r.code != 0 {
		t.Errorf("rm -f failed:\n%s", r)
	}
	checkStore(t, store)
}
