package fs

import (
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestStatsRecord: counts, errors by errno, sum, max and the histogram
// buckets of operations recorded by hand.
func TestStatsRecord(t *testing.T) {
	s := NewStats()
	s.record(opLookup, 10*time.Microsecond, fuse.OK)     // on the first bound: first bucket
	s.record(opLookup, 10*time.Microsecond+1, fuse.OK)   // just above: second
	s.record(opLookup, 2*time.Millisecond, fuse.ENOENT)  // (1ms, 10ms]
	s.record(opLookup, 20*time.Second, fuse.Status(200)) // slower than every bound; an errno Linux lacks
	s.record(opWrite, time.Millisecond, fuse.EIO)
	s.record(opWrite, -time.Second, fuse.OK) // a clock step back counts as 0

	snap := s.Snapshot()
	lk := snap.Ops["lookup"]
	if lk.Count != 4 || lk.Errors != 2 {
		t.Errorf("lookup: count %d errors %d, want 4 and 2", lk.Count, lk.Errors)
	}
	if want := map[string]uint64{"ENOENT": 1, "other": 1}; !mapsEqual(lk.Errnos, want) {
		t.Errorf("lookup errnos = %v, want %v", lk.Errnos, want)
	}
	if want := []uint64{1, 1, 0, 1, 0, 0, 0, 1}; !slices.Equal(lk.Histogram, want) {
		t.Errorf("lookup histogram = %v, want %v", lk.Histogram, want)
	}
	if lk.MaxSeconds != 20 {
		t.Errorf("lookup max = %v, want 20", lk.MaxSeconds)
	}
	if want := (20*time.Second + 2*time.Millisecond + 20*time.Microsecond + 1).Seconds(); !near(lk.TotalSeconds, want) {
		t.Errorf("lookup total = %v, want %v", lk.TotalSeconds, want)
	}
	wr := snap.Ops["write"]
	if wr.Count != 2 || wr.Errors != 1 || wr.Errnos["EIO"] != 1 || !near(wr.TotalSeconds, 0.001) || wr.Histogram[0] != 1 {
		t.Errorf("write = %+v", wr)
	}
	if len(snap.Ops) != int(numOps) {
		t.Errorf("snapshot has %d ops, want every one of %d", len(snap.Ops), numOps)
	}
	if g := snap.Ops["getattr"]; g.Count != 0 || g.Errnos != nil || len(g.Histogram) != len(snap.HistogramBoundsSeconds)+1 {
		t.Errorf("an op never called: %+v", g)
	}
	if snap.UptimeSeconds < 0 || snap.UptimeSeconds > 60 {
		t.Errorf("uptime %v", snap.UptimeSeconds)
	}
}

func near(a, b float64) bool { return a-b < 1e-9 && b-a < 1e-9 }

func mapsEqual(a, b map[string]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestStatsJSON: the field names .theater/stats promises.
func TestStatsJSON(t *testing.T) {
	s := NewStats()
	s.record(opGetXAttr, time.Microsecond, fuse.ENODATA)
	var doc map[string]any
	if err := json.Unmarshal(s.Snapshot().JSON(), &doc); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"uptime_seconds", "gomaxprocs", "histogram_bounds_seconds", "ops"} {
		if _, ok := doc[k]; !ok {
			t.Errorf("no %q in %v", k, doc)
		}
	}
	ops, _ := doc["ops"].(map[string]any)
	for _, name := range opNames {
		o, ok := ops[name].(map[string]any)
		if !ok {
			t.Errorf("no op %q", name)
			continue
		}
		for _, k := range []string{"count", "errors", "total_seconds", "max_seconds", "histogram"} {
			if _, ok := o[k]; !ok {
				t.Errorf("op %q has no %q: %v", name, k, o)
			}
		}
	}
	g, _ := ops["getxattr"].(map[string]any)
	if g["count"] != 1.0 || g["errors"] != 1.0 || g["errnos"].(map[string]any)["ENODATA"] != 1.0 {
		t.Errorf("getxattr = %v", g)
	}
}

// TestStatsConcurrent: no count is lost between goroutines (run with -race).
func TestStatsConcurrent(t *testing.T) {
	s := NewStats()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				st := fuse.OK
				if i%10 == 0 {
					st = fuse.ENOENT
				}
				s.record(opRead, time.Duration(g*1000+i)*time.Microsecond, st)
				if i%100 == 0 {
					s.Snapshot()
				}
			}
		}()
	}
	wg.Wait()
	r := s.Snapshot().Ops["read"]
	if r.Count != 8000 || r.Errors != 800 {
		t.Errorf("read: count %d errors %d, want 8000 and 800", r.Count, r.Errors)
	}
	if r.MaxSeconds != (7999 * time.Microsecond).Seconds() {
		t.Errorf("read max = %v", r.MaxSeconds)
	}
}

// fakeRaw answers as go-fuse's default file system does (ENOSYS), but
// finds some names and records that Init reached it.
type fakeRaw struct {
	fuse.RawFileSystem
	server *fuse.Server
	inited bool
}

func (f *fakeRaw) Init(s *fuse.Server) { f.inited, f.server = true, s }

func (f *fakeRaw) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	switch name {
	case "there":
		out.NodeId = 9
		return fuse.OK
	case "negative": // go-fuse's ENOENT with a negative timeout
		out.NodeId = 0
		return fuse.OK
	}
	return fuse.ENOENT
}

func (f *fakeRaw) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	return uint32(len(data)), fuse.OK
}

// TestStatsFS: the wrapper counts what it passes on, logs it with --debug,
// and leaves the rest to the file system it wraps.
func TestStatsFS(t *testing.T) {
	raw := &fakeRaw{RawFileSystem: fuse.NewDefaultRawFileSystem()}
	log, logs := newLogger(false)
	s := NewStats()
	w := newStatsFS(raw, s, log)

	w.Init(nil)
	if !raw.inited {
		t.Error("Init did not reach the wrapped file system")
	}
	if w.String() != raw.String() {
		t.Errorf("String() = %q, want the wrapped %q", w.String(), raw.String())
	}
	h := &fuse.InHeader{NodeId: 7, Caller: fuse.Caller{Pid: 4242}}
	if st := w.Lookup(nil, h, "there", &fuse.EntryOut{}); st != fuse.OK {
		t.Errorf("Lookup(there) = %v", st)
	}
	if st := w.Lookup(nil, h, "missing", &fuse.EntryOut{}); st != fuse.ENOENT {
		t.Errorf("Lookup(missing) = %v", st)
	}
	if st := w.Lookup(nil, h, "negative", &fuse.EntryOut{}); st != fuse.OK {
		t.Errorf("Lookup(negative) = %v, want it passed on unchanged", st)
	}
	// go-fuse tries Writev first and falls back to Write on ENOSYS: one write.
	in := &fuse.WriteIn{InHeader: *h}
	if _, st := w.Writev(nil, in, [][]byte{[]byte("ab")}); st != fuse.ENOSYS {
		t.Errorf("Writev = %v, want the default ENOSYS", st)
	}
	if n, st := w.Write(nil, in, []byte("ab")); n != 2 || st != fuse.OK {
		t.Errorf("Write = %d, %v", n, st)
	}
	w.Release(nil, &fuse.ReleaseIn{InHeader: *h})
	w.ReleaseDir(&fuse.ReleaseIn{InHeader: *h})
	w.StatFs(nil, h, &fuse.StatfsOut{})

	snap := s.Snapshot()
	want := map[string][2]uint64{"lookup": {3, 2}, "write": {1, 0}, "release": {1, 0}, "releasedir": {1, 0}, "statfs": {1, 1}, "getattr": {0, 0}}
	for name, cw := range want {
		if o := snap.Ops[name]; o.Count != cw[0] || o.Errors != cw[1] {
			t.Errorf("%s: count %d errors %d, want %d and %d", name, o.Count, o.Errors, cw[0], cw[1])
		}
	}
	if e := snap.Ops["statfs"].Errnos; e["ENOSYS"] != 1 {
		t.Errorf("statfs errnos %v, want ENOSYS", e)
	}

	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 7 {
		t.Fatalf("%d log lines, want one per counted request:\n%s", len(lines), logs)
	}
	for _, want := range []string{"level=DEBUG", "msg=fuse", "op=lookup", "node=7", "pid=4242", "name=missing", "errno=ENOENT", "duration="} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("log line %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[0], "errno=OK") {
		t.Errorf("log line %q lacks errno=OK", lines[0])
	}
	if !strings.Contains(lines[2], "errno=ENOENT") {
		t.Errorf("log line %q of a negative entry lacks errno=ENOENT", lines[2])
	}

	// Without a logger (no --debug) nothing is logged.
	quiet := newStatsFS(raw, s, nil)
	quiet.Lookup(nil, h, "there", &fuse.EntryOut{})
	if s.Snapshot().Ops["lookup"].Count != 4 {
		t.Error("the quiet wrapper did not count")
	}
	// Logging is cheap when the level is above Debug.
	infoLog := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	newStatsFS(raw, s, infoLog).Lookup(nil, h, "there", &fuse.EntryOut{})
	if n := strings.Count(logs.String(), "\n"); n != 7 {
		t.Errorf("%d log lines after requests that must not log, want 7", n)
	}
}

// readStats reads and decodes .theater/stats of a mount.
func readStats(t *testing.T, m *mounted) StatsSnapshot {
	t.Helper()
	var snap StatsSnapshot
	b := readFile(t, m.path(".theater", "stats"))
	if err := json.Unmarshal([]byte(b), &snap); err != nil {
		t.Fatalf(".theater/stats is not JSON: %v\n%s", err, b)
	}
	return snap
}

// TestStatsFile: .theater/stats in a real mount counts the requests made
// through it.
func TestStatsFile(t *testing.T) {
	t.Parallel()
	stats := NewStats()
	m := mountStore(t, MountOptions{Stats: stats})

	if got := dirNames(t, m.mnt); !slices.Equal(got, []string{".theater", "actors", "by-hash", "by-label"}) {
		t.Errorf("the mount's top lists %q", got)
	}
	if got := dirNames(t, m.path(".theater")); !slices.Equal(got, []string{"stats"}) {
		t.Errorf(".theater lists %q", got)
	}
	before := readStats(t, m)

	writeFile(t, m.label("greeting"), "hello")
	if got := readFile(t, m.label("greeting")); got != "hello" {
		t.Errorf("greeting = %q", got)
	}
	for range 3 {
		if _, err := os.Stat(m.label("absent")); !errors.Is(err, syscall.ENOENT) {
			t.Errorf("stat absent: %v", err)
		}
	}
	if err := os.Remove(m.label("greeting")); err != nil {
		t.Error(err)
	}
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(m.mnt, &sfs); err != nil {
		t.Error(err)
	}

	after := readStats(t, m)
	if after.UptimeSeconds < before.UptimeSeconds {
		t.Errorf("uptime went back: %v then %v", before.UptimeSeconds, after.UptimeSeconds)
	}
	for _, name := range []string{"lookup", "create", "write", "flush", "open", "read", "release", "unlink", "statfs"} {
		if a, b := after.Ops[name].Count, before.Ops[name].Count; a <= b {
			t.Errorf("%s: count %d before the requests and %d after", name, b, a)
		}
	}
	lk := after.Ops["lookup"]
	if lk.Errnos["ENOENT"] < 1 || lk.Errors < lk.Errnos["ENOENT"] {
		t.Errorf("lookup of a missing label not counted as ENOENT: %+v", lk)
	}
	if lk.TotalSeconds <= 0 || lk.MaxSeconds <= 0 || lk.MaxSeconds > lk.TotalSeconds {
		t.Errorf("lookup latency: total %v max %v", lk.TotalSeconds, lk.MaxSeconds)
	}
	if mine := stats.Snapshot().Ops["unlink"].Count; mine < 1 {
		t.Errorf("MountOptions.Stats did not receive the counts: unlink %d", mine)
	}

	// Read-only, whatever the mode bits ask.
	st := stat(t, m.path(".theater", "stats"))
	if st.Mode&0o777 != 0o444 || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Size != 0 {
		t.Errorf("stats: mode %o size %d", st.Mode, st.Size)
	}
	_, err := os.OpenFile(m.path(".theater", "stats"), os.O_WRONLY, 0)
	wantErrno(t, "open stats for writing", err, syscall.EACCES)
	wantErrno(t, "rm stats", os.Remove(m.path(".theater", "stats")), syscall.EACCES)
	wantErrno(t, "rmdir .theater", syscall.Rmdir(m.path(".theater")), syscall.EACCES)
	wantErrno(t, "create in .theater", os.WriteFile(m.path(".theater", "x"), nil, 0o644), syscall.EACCES)
	wantErrno(t, "chmod stats", os.Chmod(m.path(".theater", "stats"), 0o666), syscall.EACCES)

	// One open reads one snapshot, however it is read.
	f, err := os.Open(m.path(".theater", "stats"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	whole := readAll(t, f)
	buf := make([]byte, 7)
	var pieces []byte
	for off := int64(0); ; off += 7 {
		n, err := f.ReadAt(buf, off)
		pieces = append(pieces, buf[:n]...)
		if err != nil {
			break
		}
	}
	if string(pieces) != whole {
		t.Errorf("reading one open in pieces gave another snapshot:\n%s\n%s", pieces, whole)
	}
}

// TestStatsFileReadOnly: on a read-only mount, refusals are EROFS and the
// file still reads.
func TestStatsFileReadOnly(t *testing.T) {
	t.Parallel()
	m := mountStore(t, MountOptions{Options: Options{ReadOnly: true}})
	readStats(t, m)
	_, err := os.OpenFile(m.path(".theater", "stats"), os.O_WRONLY, 0)
	wantErrno(t, "open stats for writing", err, syscall.EROFS)
}
