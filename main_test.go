package main

import (
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// The CLI is tested through run, the whole of main but os.Exit: no binary
// is built. Every test starts from an environment without THEATER_STORE
// and THEATER_HOME, so the developer's own store is never touched.

var hashRE = regexp.MustCompile(`^[0-9a-f]{40}$`)

// result is what one run of the command line produced.
type result struct {
	args           []string
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("theater-storefs %q: exit %d\nstdout: %q\nstderr: %q", r.args, r.code, r.stdout, r.stderr)
}

// unsetEnv removes an environment variable for the duration of the test
// (t.Setenv restores it afterwards).
func unsetEnv(t *testing.T, key string) {
	t.Helper()
	t.Setenv(key, "")
	os.Unsetenv(key)
}

// cleanEnv isolates a test from the caller's store settings.
func cleanEnv(t *testing.T) {
	t.Helper()
	unsetEnv(t, "THEATER_STORE")
	unsetEnv(t, "THEATER_HOME")
}

// runCLI runs the command line with args (without the program name) and
// stdin, and checks what every run must satisfy: no Go stack trace.
func runCLI(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(append([]string{"theater-storefs"}, args...), strings.NewReader(stdin), &stdout, &stderr)
	r := result{args: args, code: code, stdout: stdout.String(), stderr: stderr.String()}
	for _, trace := range []string{"goroutine ", "panic:", "runtime.", "[recovered]"} {
		if strings.Contains(r.stderr, trace) {
			t.Errorf("stderr holds a Go stack trace (%q):\n%s", trace, r)
		}
	}
	return r
}

// tcli runs commands against one store directory.
type tcli struct {
	t   *testing.T
	dir string
}

// newCLI gives a test a clean environment and a store directory (not yet
// created).
func newCLI(t *testing.T) *tcli {
	t.Helper()
	cleanEnv(t)
	return &tcli{t: t, dir: filepath.Join(t.TempDir(), "store")}
}

// theaterCLI is newCLI over a store written the way Theater writes it.
func theaterCLI(t *testing.T) (*tcli, *theatertest.Manifest) {
	t.Helper()
	c := newCLI(t)
	m, err := theatertest.WriteStore(c.dir, theatertest.Options{Seed: 7})
	if err != nil {
		t.Fatalf("WriteStore: %v", err)
	}
	return c, m
}

func (c *tcli) run(args ...string) result {
	c.t.Helper()
	return runCLI(c.t, "", append([]string{"--store", c.dir}, args...)...)
}

func (c *tcli) runStdin(stdin string, args ...string) result {
	c.t.Helper()
	return runCLI(c.t, stdin, append([]string{"--store", c.dir}, args...)...)
}

// ok runs a command that must succeed and returns its standard output.
func (c *tcli) ok(args ...string) string {
	c.t.Helper()
	r := c.run(args...)
	if r.code != 0 {
		c.t.Fatalf("want success:\n%s", r)
	}
	return r.stdout
}

// lines splits output into lines, checking it ends with a newline.
func lines(t *testing.T, out string) []string {
	t.Helper()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Errorf("output does not end with a newline: %q", out)
	}
	return strings.Split(strings.TrimSuffix(out, "\n"), "\n")
}

// wantError checks a failed run: the exit code, exactly one line on
// stderr naming the program, containing every want, and nothing on stdout.
func wantError(t *testing.T, r result, code int, want ...string) {
	t.Helper()
	if r.code != code {
		t.Errorf("want exit %d:\n%s", code, r)
	}
	checkErrorLine(t, r, want...)
	if r.stdout != "" {
		t.Errorf("want nothing on stdout:\n%s", r)
	}
}

func checkErrorLine(t *testing.T, r result, want ...string) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("want exactly one line on stderr:\n%s", r)
	}
	if !strings.HasPrefix(r.stderr, "theater-storefs: ") {
		t.Errorf("want the error prefixed by the program name:\n%s", r)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("want stderr to mention %q:\n%s", w, r)
		}
	}
}

// lastLine is the last line of s.
func lastLine(s string) string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return l[len(l)-1]
}

func sha1hex(b []byte) string {
	s := sha1.Sum(b)
	return hex.EncodeToString(s[:])
}

func writeFile(t *testing.T, content []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// putHash stores content through stdin and returns its hash.
func (c *tcli) putHash(content string, args ...string) string {
	c.t.Helper()
	r := c.runStdin(content, append([]string{"put"}, args...)...)
	if r.code != 0 {
		c.t.Fatalf("put failed:\n%s", r)
	}
	h := strings.TrimSuffix(r.stdout, "\n")
	if !hashRE.MatchString(h) || r.stdout != h+"\n" {
		c.t.Fatalf("put must print the hash alone on one line:\n%s", r)
	}
	if want := sha1hex([]byte(content)); h != want {
		c.t.Fatalf("put printed %s, want the SHA-1 of the content %s", h, want)
	}
	return h
}

func (c *tcli) refs(label string) []string {
	c.t.Helper()
	return lines(c.t, c.ok("refs", label))
}

func TestPutFileAndGet(t *testing.T) {
	c := newCLI(t)
	content := []byte("hello, theater\n\x00binary\xff")
	path := writeFile(t, content)

	r := c.run("put", path)
	want := sha1hex(content)
	if r.code != 0 || r.stdout != want+"\n" {
		t.Fatalf("want the hash %s alone:\n%s", want, r)
	}
	if r.stderr != "" {
		t.Errorf("put printed on stderr:\n%s", r)
	}
	data, err := os.ReadFile(filepath.Join(c.dir, "data", want))
	if err != nil || !bytes.Equal(data, content) {
		t.Fatalf("data/%s = %q, %v; want the content", want, data, err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "labels")); err != nil {
		t.Errorf("put made no labels/ directory: %v", err)
	}

	for _, ref := range []string{want, "store:hash:" + want} {
		if got := c.ok("get", ref); got != string(content) {
			t.Errorf("get %s = %q, want %q", ref, got, content)
		}
	}

	// The same content again: same hash, one blob.
	if got := c.ok("put", path); got != want+"\n" {
		t.Errorf("second put printed %q", got)
	}
	if got := lines(t, c.ok("ls")); len(got) != 1 {
		t.Errorf("after storing the same content twice, ls = %q; want one blob", got)
	}
}

func TestPutStdin(t *testing.T) {
	c := newCLI(t)
	h1 := c.putHash("from stdin\n")
	h2 := c.putHash("from stdin, dash\n", "-")
	h3 := c.putHash("") // the empty blob
	if h3 != "da39a3ee5e6b4b0d3255bfef95601890afd80709" {
		t.Errorf("empty content hashed to %s", h3)
	}
	for h, want := range map[string]string{h1: "from stdin\n", h2: "from stdin, dash\n", h3: ""} {
		if got := c.ok("get", h); got != want {
			t.Errorf("get %s = %q, want %q", h, got, want)
		}
	}
}

func TestPutLabel(t *testing.T) {
	c := newCLI(t)
	h1 := c.putHash("one", "--label", "team/notes")
	h2 := c.putHash("two", "--label", "team/notes")
	if got, want := c.refs("team/notes"), []string{h1, h2}; !slices.Equal(got, want) {
		t.Fatalf("refs after two put --label = %q, want %q (oldest first)", got, want)
	}
	// Storing what the label holds already adds no duplicate.
	c.putHash("one", "--label", "team/notes")
	if got, want := c.refs("team/notes"), []string{h1, h2}; !slices.Equal(got, want) {
		t.Errorf("refs after a repeated put --label = %q, want %q", got, want)
	}
	// Theater's file format: refs joined by \n, no trailing newline.
	raw, err := os.ReadFile(filepath.Join(c.dir, "labels", "team", "notes"))
	if err != nil || string(raw) != h1+"\n"+h2 {
		t.Errorf("labels/team/notes = %q, %v; want %q", raw, err, h1+"\n"+h2)
	}

	h3 := c.putHash("three", "--label", "team/notes", "--replace")
	if got, want := c.refs("team/notes"), []string{h3}; !slices.Equal(got, want) {
		t.Errorf("refs after put --replace = %q, want %q", got, want)
	}
	if got := c.ok("get", "store:team/notes"); got != "three" {
		t.Errorf("get store:team/notes = %q, want %q", got, "three")
	}

	// A file with a label, and names Theater uses.
	path := writeFile(t, []byte(`{"counter":1}`))
	id := "8d2a1c3e-1111-4222-8333-444455556666"
	if got := c.ok("put", "--label", id+":state", path); got != sha1hex([]byte(`{"counter":1}`))+"\n" {
		t.Errorf("put --label FILE printed %q", got)
	}
	if got := c.ok("get", "store:"+id+":state"); got != `{"counter":1}` {
		t.Errorf("get store:%s:state = %q", id, got)
	}
	if got, want := lines(t, c.ok("labels")), []string{id + ":state", "team/notes"}; !slices.Equal(got, want) {
		t.Errorf("labels = %q, want %q", got, want)
	}
}

func TestGetAmbiguousLabel(t *testing.T) {
	c := newCLI(t)
	c.putHash("a", "--label", "two")
	c.putHash("b", "--label", "two")
	r := c.run("get", "store:two")
	wantError(t, r, 1, `"two"`, "ambiguous")
}

func TestLabelAndUnlabel(t *testing.T) {
	c := newCLI(t)
	h1 := c.putHash("first")
	h2 := c.putHash("second")
	h3 := c.putHash("third")

	for _, h := range []string{h1, h2, h3, h2} { // h2 twice: no duplicate
		if r := c.run("label", "x", h); r.code != 0 || r.stdout != "" || r.stderr != "" {
			t.Fatalf("label x %s: want silent success:\n%s", h, r)
		}
	}
	if got, want := c.refs("x"), []string{h1, h2, h3}; !slices.Equal(got, want) {
		t.Fatalf("refs x = %q, want %q", got, want)
	}
	c.ok("label", "y", h1)
	c.ok("label", "actor:8d2a1c3e-1111-4222-8333-444455556666", h1)

	// One hash.
	if r := c.run("unlabel", "x", h2); r.code != 0 || r.stdout != "" || r.stderr != "" {
		t.Fatalf("unlabel x HASH: want silent success:\n%s", r)
	}
	if got, want := c.refs("x"), []string{h1, h3}; !slices.Equal(got, want) {
		t.Errorf("refs x after unlabel x h2 = %q, want %q", got, want)
	}
	// Emptying the label deletes it.
	c.ok("unlabel", "x", h1)
	c.ok("unlabel", "x", h3)
	wantError(t, c.run("refs", "x"), 1, `"x"`, "not found")

	// The whole label.
	c.ok("label", "z", h1)
	c.ok("label", "z", h2)
	c.ok("unlabel", "z")
	wantError(t, c.run("refs", "z"), 1, `"z"`, "not found")
	if got, want := lines(t, c.ok("labels")), []string{"actor:8d2a1c3e-1111-4222-8333-444455556666", "y"}; !slices.Equal(got, want) {
		t.Errorf("labels = %q, want %q", got, want)
	}
	// The blobs stay until gc.
	if got := lines(t, c.ok("ls")); len(got) != 3 {
		t.Errorf("ls after unlabel = %q, want the 3 blobs", got)
	}
}

// TestListings checks labels, refs, ls and du, as text and JSON, against a
// store written the way Theater writes it.
func TestListings(t *testing.T) {
	c, m := theaterCLI(t)

	var labels []string
	for name := range m.Labels {
		labels = append(labels, name)
	}
	slices.Sort(labels)
	if got := lines(t, c.ok("labels")); !slices.Equal(got, labels) {
		t.Errorf("labels:\n got %q\nwant %q", got, labels)
	}
	var labelsJSON []string
	mustJSON(t, c.ok("labels", "--json"), &labelsJSON)
	if !slices.Equal(labelsJSON, labels) {
		t.Errorf("labels --json:\n got %q\nwant %q", labelsJSON, labels)
	}

	for _, name := range []string{theatertest.LabelNotes, theatertest.LabelTeamAlpha, theatertest.LabelWithColons, theatertest.LabelShared} {
		if got := c.refs(name); !slices.Equal(got, m.Labels[name]) {
			t.Errorf("refs %q = %q, want %q", name, got, m.Labels[name])
		}
		var refsJSON []string
		mustJSON(t, c.ok("refs", "--json", name), &refsJSON)
		if !slices.Equal(refsJSON, m.Labels[name]) {
			t.Errorf("refs --json %q = %q, want %q", name, refsJSON, m.Labels[name])
		}
	}

	var wantLs []string
	var total int64
	for h, b := range m.Blobs {
		wantLs = append(wantLs, fmt.Sprintf("%s %d", h, len(b)))
		total += int64(len(b))
	}
	slices.Sort(wantLs)
	gotLs := lines(t, c.ok("ls"))
	slices.Sort(gotLs)
	if !slices.Equal(gotLs, wantLs) {
		t.Errorf("ls:\n got %q\nwant %q", gotLs, wantLs)
	}
	var lsJSON []struct {
		Hash string `json:"hash"`
		Size int64  `json:"size"`
	}
	mustJSON(t, c.ok("ls", "--json"), &lsJSON)
	if len(lsJSON) != len(m.Blobs) {
		t.Errorf("ls --json has %d rows, want %d", len(lsJSON), len(m.Blobs))
	}
	for _, row := range lsJSON {
		if b, ok := m.Blobs[row.Hash]; !ok || int64(len(b)) != row.Size {
			t.Errorf("ls --json row %+v: not a blob of the store", row)
		}
	}

	du := c.ok("du")
	fields := strings.Fields(strings.TrimSuffix(du, "\n"))
	if len(fields) != 2 || fields[0] != strconv.FormatInt(total, 10) {
		t.Errorf("du = %q, want %d bytes first, then a human size", du, total)
	}
	if len(fields) == 2 && !regexp.MustCompile(`^[0-9]+(\.[0-9])?([KMGTPE]i)?B$`).MatchString(fields[1]) {
		t.Errorf("du human size %q is not like 12B or 3.4KiB", fields[1])
	}
	var duJSON struct {
		Bytes *int64 `json:"bytes"`
	}
	mustJSON(t, c.ok("du", "--json"), &duJSON)
	if duJSON.Bytes == nil || *duJSON.Bytes != total {
		t.Errorf("du --json bytes = %v, want %d", duJSON.Bytes, total)
	}
}

func TestDuHumanSize(t *testing.T) {
	c := newCLI(t)
	c.putHash(strings.Repeat("x", 1536))
	if got := c.ok("du"); got != "1536 1.5KiB\n" {
		t.Errorf("du = %q, want %q", got, "1536 1.5KiB\n")
	}
	for n, want := range map[int64]string{0: "0B", 1023: "1023B", 1024: "1.0KiB", 5 << 20: "5.0MiB", 3 << 30: "3.0GiB"} {
		if got := humanSize(n); got != want {
			t.Errorf("humanSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestEmptyStore(t *testing.T) {
	c := newCLI(t)
	c.putHash("x")
	c.ok("gc", "--grace", "0")
	for _, cmd := range []string{"labels", "ls"} {
		if got := c.ok(cmd); got != "" {
			t.Errorf("%s on an empty store = %q", cmd, got)
		}
		if got := c.ok(cmd, "--json"); strings.TrimSpace(got) != "[]" {
			t.Errorf("%s --json on an empty store = %q, want []", cmd, got)
		}
	}
	if got := c.ok("du"); got != "0 0B\n" {
		t.Errorf("du on an empty store = %q", got)
	}
}

// chainEvent is Theater's stored ChainEvent, as far as chain prints it.
type chainEvent struct {
	EventType   string  `json:"event_type"`
	Timestamp   uint64  `json:"timestamp"`
	Description *string `json:"description"`
}

func TestChain(t *testing.T) {
	c, m := theaterCLI(t)
	for _, id := range m.Actors {
		chain := m.Chains[id] // root first
		got := lines(t, c.ok("chain", id))
		if len(got) != len(chain) {
			t.Fatalf("chain %s: %d lines, want %d:\n%s", id, len(got), len(chain), strings.Join(got, "\n"))
		}
		var rows []struct {
			Seq         int    `json:"seq"`
			Hash        string `json:"hash"`
			EventType   string `json:"event_type"`
			Timestamp   uint64 `json:"timestamp"`
			Description string `json:"description"`
		}
		mustJSON(t, c.ok("chain", "--json", id), &rows)
		if len(rows) != len(chain) {
			t.Fatalf("chain --json %s: %d rows, want %d", id, len(rows), len(chain))
		}
		for i, line := range got {
			// Newest first: line i is event len-1-i of the chain, whose
			// sequence number (1 at the root) is len-i.
			h := chain[len(chain)-1-i]
			var ev chainEvent
			if err := json.Unmarshal(m.Blobs[h], &ev); err != nil {
				t.Fatal(err)
			}
			desc := ""
			if ev.Description != nil {
				desc = *ev.Description
			}
			f := strings.SplitN(line, " ", 5)
			if len(f) != 5 {
				t.Errorf("chain line %q: want <seq> <hash> <event_type> <timestamp> <description>", line)
				continue
			}
			seq, err := strconv.Atoi(f[0])
			if err != nil || seq != len(chain)-i || f[1] != h || f[2] != ev.EventType ||
				f[3] != strconv.FormatUint(ev.Timestamp, 10) || f[4] != desc {
				t.Errorf("chain line %d = %q\nwant seq %d, hash %s, type %q, timestamp %d, description %q",
					i, line, len(chain)-i, h, ev.EventType, ev.Timestamp, desc)
			}
			row := rows[i]
			if row.Seq != len(chain)-i || row.Hash != h || row.EventType != ev.EventType ||
				row.Timestamp != ev.Timestamp || row.Description != desc {
				t.Errorf("chain --json row %d = %+v, want the event %s", i, row, h)
			}
		}
	}
}

func TestChainBroken(t *testing.T) {
	c, m := theaterCLI(t)
	id := m.Actors[1]
	chain := m.Chains[id]
	if len(chain) < 4 {
		t.Fatalf("chain too short: %d", len(chain))
	}
	missing := chain[len(chain)-3] // the head and its parent stay reachable
	if err := os.Remove(filepath.Join(c.dir, "data", missing)); err != nil {
		t.Fatal(err)
	}
	r := c.run("chain", id)
	if r.code != 1 {
		t.Errorf("a broken chain must exit 1:\n%s", r)
	}
	got := lines(t, r.stdout)
	if len(got) != 2 || !strings.Contains(got[0], chain[len(chain)-1]) || !strings.Contains(got[1], chain[len(chain)-2]) {
		t.Errorf("a broken chain prints the events before the break:\n%s", r)
	}
	// The store also logs the break; the error itself is the last line.
	if l := lastLine(r.stderr); !strings.HasPrefix(l, "theater-storefs: ") || !strings.Contains(l, missing) || !strings.Contains(l, id) {
		t.Errorf("want the last stderr line to name the actor and the missing event %s:\n%s", missing, r)
	}
}

func TestFsck(t *testing.T) {
	c, m := theaterCLI(t)
	r := c.run("fsck")
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("fsck of a clean store: want exit 0 and no problems:\n%s", r)
	}
	var rep struct {
		Blobs    int `json:"blobs"`
		Labels   int `json:"labels"`
		Problems []struct {
			Kind, Name, Detail string
		} `json:"problems"`
	}
	mustJSON(t, c.ok("fsck", "--json"), &rep)
	if rep.Blobs != len(m.Blobs) || rep.Labels != len(m.Labels) || len(rep.Problems) != 0 {
		t.Errorf("fsck --json of a clean store = %+v, want %d blobs, %d labels, no problems", rep, len(m.Blobs), len(m.Labels))
	}

	// A torn blob, as Theater's non-atomic writes can leave: same name,
	// other content (same size, so only hashing can tell).
	bad := m.Labels[theatertest.LabelTeamBeta][0]
	torn := bytes.Repeat([]byte{0}, len(m.Blobs[bad]))
	if err := os.WriteFile(filepath.Join(c.dir, "data", bad), torn, 0o644); err != nil {
		t.Fatal(err)
	}
	r = c.run("fsck")
	if r.code != 1 {
		t.Errorf("fsck of a corrupt store must exit 1:\n%s", r)
	}
	if got := lines(t, r.stdout); len(got) != 1 || !strings.Contains(got[0], bad) || !strings.Contains(got[0], "corrupt") {
		t.Errorf("fsck must report the corrupt blob %s, one problem a line:\n%s", bad, r)
	}
	if l := lastLine(r.stderr); !strings.HasPrefix(l, "theater-storefs: ") {
		t.Errorf("fsck with problems must end with an error line:\n%s", r)
	}

	rj := c.run("fsck", "--json")
	if rj.code != 1 {
		t.Errorf("fsck --json of a corrupt store must exit 1:\n%s", rj)
	}
	rep.Problems = nil
	mustJSON(t, rj.stdout, &rep)
	if len(rep.Problems) != 1 || rep.Problems[0].Kind != "corrupt-blob" || rep.Problems[0].Name != bad {
		t.Errorf("fsck --json problems = %+v, want one corrupt-blob %s", rep.Problems, bad)
	}

	// A label pointing to a missing blob.
	gone := m.Labels[theatertest.LabelTeamAlpha][1]
	if err := os.Remove(filepath.Join(c.dir, "data", gone)); err != nil {
		t.Fatal(err)
	}
	r = c.run("fsck")
	if r.code != 1 || !strings.Contains(r.stdout, theatertest.LabelTeamAlpha) || !strings.Contains(r.stdout, gone) {
		t.Errorf("fsck must report label %q pointing to the missing blob %s:\n%s", theatertest.LabelTeamAlpha, gone, r)
	}
}

func TestGetCorruptBlob(t *testing.T) {
	c := newCLI(t)
	h := c.putHash("the real content\n")
	if err := os.WriteFile(filepath.Join(c.dir, "data", h), []byte("torn"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := c.run("get", h)
	if r.code != 1 || r.stdout != "" {
		t.Errorf("get of a corrupt blob: want exit 1 and no bytes served:\n%s", r)
	}
	if l := lastLine(r.stderr); !strings.HasPrefix(l, "theater-storefs: ") || !strings.Contains(l, h) || !strings.Contains(l, "corrupt") {
		t.Errorf("want the error to name the corrupt blob %s:\n%s", h, r)
	}
}

func TestGC(t *testing.T) {
	c, m := theaterCLI(t)
	allBlobs := sortedKeys(m.Blobs)

	// Everything was just written: the default grace keeps it all.
	r := c.run("gc")
	if r.code != 0 || r.stdout != "" {
		t.Errorf("gc with the default grace removed something from a fresh store:\n%s", r)
	}

	r = c.run("gc", "--dry-run", "--grace", "0")
	if r.code != 0 {
		t.Fatalf("gc --dry-run:\n%s", r)
	}
	if got := sorted(lines(t, r.stdout)); !slices.Equal(got, m.Unreachable) {
		t.Errorf("gc --dry-run --grace 0 lists:\n got %q\nwant %q", got, m.Unreachable)
	}
	if got := c.blobs(); !slices.Equal(got, allBlobs) {
		t.Errorf("gc --dry-run removed blobs: %d left of %d", len(got), len(allBlobs))
	}

	var dry struct {
		Removed []string `json:"removed"`
		DryRun  bool     `json:"dry_run"`
		Bytes   int64    `json:"bytes"`
	}
	mustJSON(t, c.ok("gc", "--json", "--dry-run", "--grace", "0"), &dry)
	var unreachableBytes int64
	for _, h := range m.Unreachable {
		unreachableBytes += int64(len(m.Blobs[h]))
	}
	if !dry.DryRun || !slices.Equal(sorted(dry.Removed), m.Unreachable) || dry.Bytes != unreachableBytes {
		t.Errorf("gc --json --dry-run = %+v, want dry_run, removed %q, %d bytes", dry, m.Unreachable, unreachableBytes)
	}
	if got := c.blobs(); !slices.Equal(got, allBlobs) {
		t.Errorf("gc --json --dry-run removed blobs")
	}

	r = c.run("gc", "--grace", "0")
	if r.code != 0 {
		t.Fatalf("gc --grace 0:\n%s", r)
	}
	if got := sorted(lines(t, r.stdout)); !slices.Equal(got, m.Unreachable) {
		t.Errorf("gc --grace 0 printed:\n got %q\nwant %q", got, m.Unreachable)
	}
	var kept []string
	for _, h := range allBlobs {
		if !slices.Contains(m.Unreachable, h) {
			kept = append(kept, h)
		}
	}
	if got := c.blobs(); !slices.Equal(got, kept) {
		t.Errorf("after gc --grace 0, blobs:\n got %q\nwant %q", got, kept)
	}
	// Every label and every chain still resolves.
	if r := c.run("fsck"); r.code != 0 {
		t.Errorf("fsck after gc:\n%s", r)
	}
	for _, id := range m.Actors {
		if got := lines(t, c.ok("chain", id)); len(got) != len(m.Chains[id]) {
			t.Errorf("chain %s after gc: %d events, want %d", id, len(got), len(m.Chains[id]))
		}
	}

	// Nothing left to collect.
	var again struct {
		Removed []string `json:"removed"`
		DryRun  bool     `json:"dry_run"`
	}
	mustJSON(t, c.ok("gc", "--json", "--grace", "0"), &again)
	if again.DryRun || again.Removed == nil || len(again.Removed) != 0 {
		t.Errorf("second gc --json = %+v, want removed: []", again)
	}
}

func TestGCJSONRemoves(t *testing.T) {
	c, m := theaterCLI(t)
	var rep struct {
		Blobs     int      `json:"blobs"`
		Reachable int      `json:"reachable"`
		Removed   []string `json:"removed"`
		DryRun    bool     `json:"dry_run"`
	}
	mustJSON(t, c.ok("gc", "--json", "--grace", "0"), &rep)
	if rep.DryRun || rep.Blobs != len(m.Blobs) || !slices.Equal(sorted(rep.Removed), m.Unreachable) {
		t.Errorf("gc --json --grace 0 = %+v, want %d blobs and removed %q", rep, len(m.Blobs), m.Unreachable)
	}
	for _, h := range m.Unreachable {
		if _, err := os.Stat(filepath.Join(c.dir, "data", h)); !os.IsNotExist(err) {
			t.Errorf("unreachable blob %s still there: %v", h, err)
		}
	}
}

func (c *tcli) blobs() []string {
	c.t.Helper()
	var out []string
	for _, l := range lines(c.t, c.ok("ls")) {
		out = append(out, strings.Fields(l)[0])
	}
	return sorted(out)
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func mustJSON(t *testing.T, out string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("output is not the JSON expected (%v):\n%s", err, out)
	}
}

// TestStoreLocation: --store (or THEATER_STORE), else THEATER_HOME/store,
// else ./store.
func TestStoreLocation(t *testing.T) {
	hasBlob := func(t *testing.T, dir, h string) bool {
		t.Helper()
		_, err := os.Stat(filepath.Join(dir, "data", h))
		return err == nil
	}
	put := func(t *testing.T, content string, args ...string) string {
		t.Helper()
		r := runCLI(t, content, append(args, "put")...)
		if r.code != 0 {
			t.Fatalf("put:\n%s", r)
		}
		return strings.TrimSpace(r.stdout)
	}

	t.Run("flag", func(t *testing.T) {
		cleanEnv(t)
		dir := filepath.Join(t.TempDir(), "s")
		h := put(t, "flag", "--store", dir)
		if !hasBlob(t, dir, h) {
			t.Errorf("--store %s: blob not there", dir)
		}
	})
	t.Run("THEATER_STORE", func(t *testing.T) {
		cleanEnv(t)
		dir := filepath.Join(t.TempDir(), "s")
		home := t.TempDir()
		t.Setenv("THEATER_STORE", dir)
		t.Setenv("THEATER_HOME", home) // THEATER_STORE wins
		h := put(t, "env")
		if !hasBlob(t, dir, h) {
			t.Errorf("THEATER_STORE=%s: blob not there", dir)
		}
		if hasBlob(t, filepath.Join(home, "store"), h) {
			t.Errorf("THEATER_STORE must win over THEATER_HOME")
		}
	})
	t.Run("flag beats THEATER_STORE", func(t *testing.T) {
		cleanEnv(t)
		envDir := filepath.Join(t.TempDir(), "env")
		flagDir := filepath.Join(t.TempDir(), "flag")
		t.Setenv("THEATER_STORE", envDir)
		h := put(t, "both", "--store", flagDir)
		if !hasBlob(t, flagDir, h) || hasBlob(t, envDir, h) {
			t.Errorf("--store must win over THEATER_STORE")
		}
	})
	t.Run("THEATER_HOME", func(t *testing.T) {
		cleanEnv(t)
		home := t.TempDir()
		t.Setenv("THEATER_HOME", home)
		h := put(t, "home")
		if !hasBlob(t, filepath.Join(home, "store"), h) {
			t.Errorf("THEATER_HOME=%s: blob not in its store/", home)
		}
		// Readers find it there too.
		if r := runCLI(t, "", "get", h); r.code != 0 || r.stdout != "home" {
			t.Errorf("get through THEATER_HOME:\n%s", r)
		}
	})
	t.Run("working directory", func(t *testing.T) {
		cleanEnv(t)
		wd := t.TempDir()
		t.Chdir(wd)
		h := put(t, "cwd")
		if !hasBlob(t, filepath.Join(wd, "store"), h) {
			t.Errorf("no --store, THEATER_STORE or THEATER_HOME: blob not in ./store")
		}
		if r := runCLI(t, "", "ls"); r.code != 0 || !strings.HasPrefix(r.stdout, h+" 3\n") {
			t.Errorf("ls in the working directory's store:\n%s", r)
		}
	})
	t.Run("readers do not create a store", func(t *testing.T) {
		cleanEnv(t)
		dir := filepath.Join(t.TempDir(), "nothing")
		for _, cmd := range [][]string{{"labels"}, {"ls"}, {"du"}, {"fsck"}, {"gc"}, {"refs", "x"}, {"get", "store:x"}} {
			r := runCLI(t, "", append([]string{"--store", dir}, cmd...)...)
			wantError(t, r, 1, "no store", dir)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("a read-only command created %s", dir)
		}
	})
}

// TestFailedOperations: exit 1, one line naming the thing at fault.
func TestFailedOperations(t *testing.T) {
	c := newCLI(t)
	h := c.putHash("exists", "--label", "one")
	c.putHash("another", "--label", "many")
	c.putHash("and another", "--label", "many")
	missing := sha1hex([]byte("never stored"))
	id := "8d2a1c3e-1111-4222-8333-444455556666"
	dir := t.TempDir()

	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"get", missing}, []string{missing, "not found"}},
		{[]string{"get", "store:hash:" + missing}, []string{missing, "not found"}},
		{[]string{"get", "store:nolabel"}, []string{`"nolabel"`, "not found"}},
		{[]string{"get", "store:many"}, []string{`"many"`, "ambiguous"}},
		{[]string{"refs", "nolabel"}, []string{`"nolabel"`, "not found"}},
		{[]string{"unlabel", "nolabel"}, []string{`"nolabel"`, "not found"}},
		{[]string{"unlabel", "nolabel", h}, []string{`"nolabel"`, "not found"}},
		{[]string{"unlabel", "one", missing}, []string{`"one"`, missing}},
		{[]string{"label", "new", missing}, []string{missing, "not found"}},
		{[]string{"label", "one/below", h}, []string{"one/below"}},
		{[]string{"put", filepath.Join(dir, "no-such-file")}, []string{"no-such-file"}},
		{[]string{"put", dir}, []string{"directory"}},
		{[]string{"chain", id}, []string{id, "not found"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			wantError(t, c.run(tt.args...), 1, tt.want...)
		})
	}
	// Nothing above changed the store.
	if got := c.refs("one"); !slices.Equal(got, []string{h}) {
		t.Errorf("refs one = %q after failed operations", got)
	}
}

// TestUsageErrors: exit 2, one line, nothing done.
func TestUsageErrors(t *testing.T) {
	c := newCLI(t)
	h := c.putHash("exists", "--label", "one")
	tests := []struct {
		args []string
		want []string
	}{
		// argument counts
		{[]string{"put", "a", "b"}, []string{"wrong number of arguments"}},
		{[]string{"get"}, []string{"wrong number of arguments"}},
		{[]string{"get", h, h}, []string{"wrong number of arguments"}},
		{[]string{"label", "x"}, []string{"wrong number of arguments"}},
		{[]string{"label", "x", h, h}, []string{"wrong number of arguments"}},
		{[]string{"unlabel"}, []string{"wrong number of arguments"}},
		{[]string{"unlabel", "x", h, h}, []string{"wrong number of arguments"}},
		{[]string{"refs"}, []string{"wrong number of arguments"}},
		{[]string{"labels", "x"}, []string{"wrong number of arguments"}},
		{[]string{"ls", "x"}, []string{"wrong number of arguments"}},
		{[]string{"du", "x"}, []string{"wrong number of arguments"}},
		{[]string{"chain"}, []string{"wrong number of arguments"}},
		{[]string{"fsck", "x"}, []string{"wrong number of arguments"}},
		{[]string{"gc", "x"}, []string{"wrong number of arguments"}},
		// commands and flags
		{[]string{"frobnicate"}, []string{"frobnicate"}},
		{[]string{"--bogus", "labels"}, []string{"bogus"}},
		{[]string{"labels", "--bogus"}, []string{"bogus"}},
		{[]string{"put", "--bogus"}, []string{"bogus"}},
		{[]string{"gc", "--grace", "soon"}, []string{"grace"}},
		{[]string{"--log-format", "xml", "labels"}, []string{"log-format"}},
		{[]string{"put", "--replace"}, []string{"--replace"}},
		// hashes
		{[]string{"label", "x", "zz"}, []string{`"zz"`, "not a hash"}},
		{[]string{"label", "x", strings.ToUpper(h)}, []string{strings.ToUpper(h)}},
		{[]string{"label", "x", h[:39]}, []string{h[:39]}},
		{[]string{"unlabel", "one", "zz"}, []string{`"zz"`}},
		{[]string{"get", "store:hash:zz"}, []string{`"zz"`}},
		{[]string{"get", "zz"}, []string{`"zz"`}},
		{[]string{"get", "/etc/passwd"}, []string{"/etc/passwd"}},
		// label names
		{[]string{"label", "../x", h}, []string{"../x", "invalid label"}},
		{[]string{"label", "/abs", h}, []string{"/abs"}},
		{[]string{"label", "a//b", h}, []string{"a//b"}},
		{[]string{"label", "a/./b", h}, []string{"a/./b"}},
		{[]string{"label", strings.Repeat("n", 256), h}, []string{"255"}},
		{[]string{"put", "--label", "../x"}, []string{"../x"}},
		{[]string{"unlabel", "../x"}, []string{"../x"}},
		{[]string{"unlabel", "../x", h}, []string{"../x"}},
		{[]string{"refs", "../x"}, []string{"../x"}},
		{[]string{"get", "store:../x"}, []string{"../x"}},
		{[]string{"get", "store:"}, []string{"empty"}},
		// actor ids
		{[]string{"chain", "not-an-actor"}, []string{"not-an-actor"}},
		{[]string{"chain", "8D2A1C3E-1111-4222-8333-444455556666"}, []string{"8D2A1C3E"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			wantError(t, c.runStdin("stdin content", tt.args...), 2, tt.want...)
		})
	}
	if got := lines(t, c.ok("labels")); !slices.Equal(got, []string{"one"}) {
		t.Errorf("usage errors changed the labels: %q", got)
	}
	if got := c.blobs(); !slices.Equal(got, []string{h}) {
		t.Errorf("usage errors stored something: %q", got)
	}
}

func TestHelp(t *testing.T) {
	cleanEnv(t)
	for _, args := range [][]string{{"--help"}, {"put", "--help"}, {}} {
		r := runCLI(t, "", args...)
		if r.code != 0 || !strings.Contains(r.stdout, "theater-storefs") {
			t.Errorf("help: want exit 0 and usage on stdout:\n%s", r)
		}
	}
}

// fullWriter fails every write, as /dev/full does.
type fullWriter struct{}

func (fullWriter) Write(p []byte) (int, error) { return 0, syscall.ENOSPC }

// TestOutputErrors: a command whose output cannot be written fails, in
// one line naming why, whether it prints line by line or as JSON.
func TestOutputErrors(t *testing.T) {
	c := newCLI(t)
	if r := runCLI(t, "hello", "--store", c.dir, "put", "--label", "greeting"); r.code != 0 {
		t.Fatalf("put: %s", r)
	}
	for _, args := range [][]string{{"labels"}, {"labels", "--json"}, {"refs", "greeting"}, {"ls"}, {"du"}, {"get", "store:greeting"}} {
		var stderr bytes.Buffer
		code := run(append([]string{"theater-storefs", "--store", c.dir}, args...), strings.NewReader(""), fullWriter{}, &stderr)
		if code != exitFailed || !strings.Contains(stderr.String(), "no space left on device") || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%v into a full disk: exit %d, stderr %q; want %d and one line naming the error", args, code, stderr.String(), exitFailed)
		}
	}
}

// TestBadInputMessages: a negative grace is bad usage, and an error about
// a name of kilobytes does not echo it whole.
func TestBadInputMessages(t *testing.T) {
	c := newCLI(t)
	if r := runCLI(t, "x", "--store", c.dir, "put"); r.code != 0 {
		t.Fatalf("put: %s", r)
	}
	if r := runCLI(t, "", "--store", c.dir, "gc", "--grace", "-1h"); r.code != exitUsage || !strings.Contains(r.stderr, "negative") {
		t.Errorf("gc --grace -1h: %s; want exit %d naming the negative grace", r, exitUsage)
	}
	long := strings.Repeat("n", 5000)
	r := runCLI(t, "x", "--store", c.dir, "put", "--label", long)
	if r.code != exitUsage || len(r.stderr) > 400 || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("put --label <5000 bytes>: exit %d, %d bytes of stderr; want %d and one short line", r.code, len(r.stderr), exitUsage)
	}
}

// TestLabelsOneNameALine: a label name holding a newline is printed
// quoted, so that each line of `labels` is one name.
func TestLabelsOneNameALine(t *testing.T) {
	c := newCLI(t)
	for _, name := range []string{"plain", "two\nlines", "tab\there"} {
		if r := runCLI(t, "x", "--store", c.dir, "put", "--label", name); r.code != 0 {
			t.Fatalf("put --label %q: %s", name, r)
		}
	}
	r := runCLI(t, "", "--store", c.dir, "labels")
	want := []string{"plain", `"tab\there"`, `"two\nlines"`}
	if got := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); r.code != 0 || !slices.Equal(got, want) {
		t.Errorf("labels = %q (exit %d), want %q", got, r.code, want)
	}
}
