package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// concurrentTimeout bounds a whole concurrent phase: a deadlocked mount
// fails the test instead of hanging the run.
const concurrentTimeout = 15 * time.Second

// runScripts runs scripts at once in dir, each in its own sh, and returns
// their results in order. A script still running after concurrentTimeout
// is killed and reported.
func runScripts(t *testing.T, dir string, scripts []string) []result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), concurrentTimeout)
	defer cancel()
	out := make([]result, len(scripts))
	var wg sync.WaitGroup
	for i, s := range scripts {
		wg.Go(func() {
			cmd := command(ctx, "/", dir, "sh", "-c", inDir(dir, s))
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			out[i] = result{cmd: "sh -c " + q(s), stdout: stdout.String(), stderr: stderr.String()}
			if err != nil {
				out[i].code = -1
				if cmd.ProcessState != nil && cmd.ProcessState.Exited() {
					out[i].code = cmd.ProcessState.ExitCode()
				}
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		t.Errorf("concurrent scripts did not finish within %v: the mount hangs (deadlock?); its server was killed to free them", concurrentTimeout)
	}
	return out
}

// TestConcurrentWriters: 8 shells write one label 50 times each while 8
// more write a label each. Every close is one whole replacement: each label
// ends up naming one complete blob holding one of the lines written, and
// fsck finds nothing wrong.
func TestConcurrentWriters(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	const writers, rounds = 8, 50
	written := map[string]bool{}
	var scripts []string
	for i := 1; i <= writers; i++ {
		scripts = append(scripts, fmt.Sprintf(`for j in $(seq %d); do echo %d-$j > by-label/same || exit 1; done`, rounds, i))
		for j := 1; j <= rounds; j++ {
			written[fmt.Sprintf("%d-%d\n", i, j)] = true
		}
	}
	other := map[string]bool{}
	for i := 1; i <= writers; i++ {
		scripts = append(scripts, fmt.Sprintf(`for j in $(seq %d); do echo w%d-$j > by-label/w%d || exit 1; done`, rounds, i, i))
		for j := 1; j <= rounds; j++ {
			other[fmt.Sprintf("w%d-%d\n", i, j)] = true
		}
	}
	for _, r := range runScripts(t, mnt, scripts) {
		if r.code != 0 {
			t.Errorf("writer failed:\n%s", r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	want := []string{"same"}
	for i := 1; i <= writers; i++ {
		want = append(want, fmt.Sprintf("w%d", i))
	}
	if got := lines(mustSh(t, mnt, "ls by-label")); !slices.Equal(got, want) {
		t.Errorf("ls by-label = %q, want %q", got, want)
	}
	st := checkStore(t, store)
	st.wantLabels(t, want...)
	refs := strings.Split(st.labels["same"], "\n")
	if len(refs) != 1 {
		t.Fatalf("labels/same = %q, want exactly one ref", st.labels["same"])
	}
	final := string(st.blobs[refs[0]])
	if !written[final] {
		t.Errorf("labels/same names a blob holding %q, which no writer wrote whole", final)
	}
	if got := catFile(t, mnt, "by-label/same"); got != final {
		t.Errorf("cat by-label/same = %q, the store says %q", got, final)
	}
	for i := 1; i <= writers; i++ {
		wantLabelContent(t, mnt, store, fmt.Sprintf("w%d", i), fmt.Appendf(nil, "w%d-%d\n", i, rounds))
	}
	// Every blob is a line some writer wrote (the empty blob is
	// TestWriteRedirectCommitsOnlyFinalContent's business).
	for h, b := range st.blobs {
		if s := string(b); !written[s] && !other[s] && len(b) != 0 {
			t.Errorf("data/%s holds %q, which no writer wrote", h, s)
		}
	}
	mustFsck(t, store)
}

// TestConcurrentReadersSeeWholeContent: while shells replace a label with
// `echo`, other shells cat it. Every read shows the whole of some
// version: the first, or one of the lines written. Never a mix (old bytes
// cut to a new size), never an empty label that nobody wrote, and never a
// hang.
func TestConcurrentReadersSeeWholeContent(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo initial-content > by-label/same")
	valid := map[string]bool{"initial-content\n": true}
	var scripts []string
	const writers, readers, rounds = 4, 4, 50
	for i := 1; i <= writers; i++ {
		scripts = append(scripts, fmt.Sprintf(`for j in $(seq %d); do echo %d-$j > by-label/same || exit 1; done`, rounds, i))
		for j := 1; j <= rounds; j++ {
			valid[fmt.Sprintf("%d-%d\n", i, j)] = true
		}
	}
	for range readers {
		// @ ends each read.
		scripts = append(scripts, fmt.Sprintf(`for k in $(seq %d); do cat by-label/same || exit 1; echo @; done`, 2*rounds))
	}
	results := runScripts(t, mnt, scripts)
	seen := map[string]int{}
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("failed:\n%s", r)
			continue
		}
		if i < writers {
			continue
		}
		for _, read := range strings.Split(strings.TrimSuffix(r.stdout, "@\n"), "@\n") {
			if !valid[read] {
				seen[read]++
			}
		}
	}
	for read, n := range seen {
		t.Errorf("%d reads gave %q, which is no whole version of the label", n, read)
	}
	checkStore(t, store)
}

// TestStatDuringWritesNoDeadlock: stat of a label while other shells
// replace it must keep answering. (Getattr looks at the label's open
// writers while a closing writer's Release holds its own lock and wants the
// label's: taken in opposite orders, they deadlock the label for good.)
func TestStatDuringWritesNoDeadlock(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	mustSh(t, mnt, "echo initial > by-label/same")
	var scripts []string
	for i := 1; i <= 4; i++ {
		scripts = append(scripts, fmt.Sprintf(`for j in $(seq 50); do echo %d-$j > by-label/same || exit 1; done`, i))
		scripts = append(scripts, `for k in $(seq 100); do stat -c %s by-label/same >/dev/null || exit 1; done`)
	}
	for _, r := range runScripts(t, mnt, scripts) {
		if r.code != 0 {
			t.Errorf("failed:\n%s", r)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	st := checkStore(t, store)
	got := string(st.blobs[st.labels["same"]])
	if !regexp.MustCompile(`^[1-4]-50\n$`).MatchString(got) {
		t.Errorf("labels/same holds %q, want some writer's last line", got)
	}
	mustFsck(t, store)
}

// TestUncommittedWriteInvisible: a label changes when the writer closes
// (or fsyncs) it. While another process holds it open with O_TRUNC, and
// has written part of the new content, readers see the old content, whole,
// with its size; the store still holds the old ref.
func TestUncommittedWriteInvisible(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)
	mustSh(t, mnt, "echo old-content > by-label/x")
	old := "old-content\n"

	wantOld := func(when string) {
		t.Helper()
		if got := statFile(t, mnt, "%s", "by-label/x"); got != fmt.Sprint(len(old)) {
			t.Errorf("%s: stat by-label/x: size %s, want the old size %d", when, got, len(old))
		}
		if got := catFile(t, mnt, "by-label/x"); got != old {
			t.Errorf("%s: cat by-label/x = %q, want the old content %q", when, got, old)
		}
		// The writer's spool is in tmp/ for now: check only the label.
		if got := readStore(t, store).labels["x"]; got != sha1Hex([]byte(old)) {
			t.Errorf("%s: labels/x = %q, want still the old ref %s", when, got, sha1Hex([]byte(old)))
		}
	}

	h := holdOpen(t, filepath.Join(mnt, "by-label/x"), os.O_TRUNC)
	wantOld("open with O_TRUNC, nothing written")
	h.write("NEW!")
	wantOld("4 bytes written, not closed")
	h.close()
	wantLabelContent(t, mnt, store, "x", []byte("NEW!"))
}

// TestSecondWriterOfNewLabel: while one process has created a new label and
// not closed it yet, another process writing the same name succeeds (as on
// any file system, and as the spec's "several writers, the last close
// wins" wants); it must not fail with "No such file or directory" because
// the first writer has not committed yet.
func TestSecondWriterOfNewLabel(t *testing.T) {
	requireFuse(t)
	t.Parallel()
	store := emptyStore(t)
	mnt := mountStore(t, store)

	h := holdOpen(t, filepath.Join(mnt, "by-label/n"), os.O_CREATE|os.O_TRUNC)
	h.write("first")
	mustSh(t, mnt, "echo second > by-label/n")
	if got := catFile(t, mnt, "by-label/n"); got != "second\n" {
		t.Errorf("cat by-label/n = %q, want %q", got, "second\n")
	}
	checkStoreSpools(t, store, true).wantLabel(t, "n", []byte("second\n"))
	mustSh(t, mnt, "touch by-label/n")
	h.close() // the last close wins
	wantLabelContent(t, mnt, store, "n", []byte("first"))
	mustFsck(t, store)
}
