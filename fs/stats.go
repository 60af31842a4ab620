package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Operation counters. Every FUSE request the kernel sends goes through
// statsFS, which wraps the node tree's fuse.RawFileSystem: it counts the
// request, its errno and its latency into Stats, and with --debug logs it.
// The counters are atomics, so a request costs a few uncontended adds and
// no lock; .theater/stats and the --metrics endpoint read a Snapshot.

// op is one kind of FUSE request counted; .theater/stats and the metrics
// report them by name.
type op int

const (
	opLookup op = iota
	opGetAttr
	opSetAttr
	opAccess
	opOpen
	opCreate
	opRead
	opWrite
	opFlush
	opFsync
	opRelease
	opOpenDir
	opReadDir
	opReadDirPlus
	opReleaseDir
	opUnlink
	opRmdir
	opMkdir
	opRename
	opGetXAttr
	opListXAttr
	opSetXAttr
	opRemoveXAttr
	opStatFs
	opStatx
	numOps
)

// opNames are the stable names of .theater/stats and the metrics.
var opNames = [numOps]string{
	opLookup:      "lookup",
	opGetAttr:     "getattr",
	opSetAttr:     "setattr",
	opAccess:      "access",
	opOpen:        "open",
	opCreate:      "create",
	opRead:        "read",
	opWrite:       "write",
	opFlush:       "flush",
	opFsync:       "fsync",
	opRelease:     "release",
	opOpenDir:     "opendir",
	opReadDir:     "readdir",
	opReadDirPlus: "readdirplus",
	opReleaseDir:  "releasedir",
	opUnlink:      "unlink",
	opRmdir:       "rmdir",
	opMkdir:       "mkdir",
	opRename:      "rename",
	opGetXAttr:    "getxattr",
	opListXAttr:   "listxattr",
	opSetXAttr:    "setxattr",
	opRemoveXAttr: "removexattr",
	opStatFs:      "statfs",
	opStatx:       "statx",
}

func (o op) String() string { return opNames[o] }

// histogramBounds are the upper bounds, in seconds, of the latency
// histogram's buckets; one more bucket holds everything slower.
var histogramBounds = [...]float64{1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10}

// histogramNanos is histogramBounds in nanoseconds.
var histogramNanos = func() (out [len(histogramBounds)]int64) {
	for i, b := range histogramBounds {
		out[i] = int64(b * 1e9)
	}
	return out
}()

// maxErrno is the slot of errnos counted together, as "other": Linux's
// errnos are all below it.
const maxErrno = 134

// opCounters are one operation's counters.
type opCounters struct {
	buckets  [len(histogramBounds) + 1]atomic.Uint64
	errnos   [maxErrno + 1]atomic.Uint64
	sumNanos atomic.Uint64
	maxNanos atomic.Int64
}

// Stats counts a mount's FUSE operations: how many, how many failed and
// with which errno, and how long they took. It is safe for concurrent use.
type Stats struct {
	started time.Time
	ops     [numOps]opCounters
}

// NewStats returns empty counters; the uptime counts from now.
func NewStats() *Stats { return &Stats{started: time.Now()} }

// record counts one finished operation. The latency is counted before the
// errno, and Snapshot reads in the opposite order, so a snapshot never
// shows more errors than calls.
func (s *Stats) record(o op, d time.Duration, status fuse.Status) {
	c := &s.ops[o]
	ns := max(int64(d), 0)
	i := 0
	for i < len(histogramNanos) && ns > histogramNanos[i] {
		i++
	}
	c.buckets[i].Add(1)
	c.sumNanos.Add(uint64(ns))
	for {
		m := c.maxNanos.Load()
		if ns <= m || c.maxNanos.CompareAndSwap(m, ns) {
			break
		}
	}
	if status != fuse.OK {
		en := int(status)
		if en <= 0 || en > maxErrno {
			en = maxErrno
		}
		c.errnos[en].Add(1)
	}
}

// StatsSnapshot is what .theater/stats shows, as JSON. The field names
// are stable.
type StatsSnapshot struct {
	// UptimeSeconds is the time since the mount started.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// GOMAXPROCS is how many CPUs run the server's Go code now: one
	// while it mostly waits, more while it is busy (see procs).
	GOMAXPROCS int `json:"gomaxprocs"`
	// HistogramBoundsSeconds are the upper bounds of OpStats.Histogram's
	// buckets; the histogram has one bucket more, for everything slower.
	HistogramBoundsSeconds []float64 `json:"histogram_bounds_seconds"`
	// Ops has every counted operation by name, also those not called yet.
	Ops map[string]OpStats `json:"ops"`
}

// OpStats are one operation's counters.
type OpStats struct {
	Count        uint64  `json:"count"`         // calls answered
	Errors       uint64  `json:"errors"`        // calls answered with an errno
	TotalSeconds float64 `json:"total_seconds"` // time spent answering, summed
	MaxSeconds   float64 `json:"max_seconds"`   // the slowest call
	// Histogram counts the calls by latency: Histogram[i] took at most
	// HistogramBoundsSeconds[i] (and more than the bound before); the last
	// took longer than every bound.
	Histogram []uint64 `json:"histogram"`
	// Errnos counts the errors by errno name ("ENOENT"); absent when none.
	Errnos map[string]uint64 `json:"errnos,omitempty"`
}

// Snapshot reads the counters. Each operation's figures are consistent
// with each other (Count is the histogram's total, Errors at most Count);
// operations are read one after another while calls go on.
func (s *Stats) Snapshot() StatsSnapshot {
	snap := StatsSnapshot{
		UptimeSeconds:          time.Since(s.started).Seconds(),
		GOMAXPROCS:             runtime.GOMAXPROCS(0),
		HistogramBoundsSeconds: append([]float64(nil), histogramBounds[:]...),
		Ops:                    make(map[string]OpStats, numOps),
	}
	for o := range numOps {
		c := &s.ops[o]
		var st OpStats
		for en := range c.errnos {
			if n := c.errnos[en].Load(); n > 0 {
				if st.Errnos == nil {
					st.Errnos = map[string]uint64{}
				}
				name := "other"
				if en < maxErrno {
					name = errnoString(syscall.Errno(en))
				}
				st.Errnos[name] += n
				st.Errors += n
			}
		}
		st.MaxSeconds = time.Duration(c.maxNanos.Load()).Seconds()
		st.TotalSeconds = time.Duration(c.sumNanos.Load()).Seconds()
		st.Histogram = make([]uint64, len(c.buckets))
		for i := range c.buckets {
			st.Histogram[i] = c.buckets[i].Load()
			st.Count += st.Histogram[i]
		}
		snap.Ops[o.String()] = st
	}
	return snap
}

// JSON is the snapshot as .theater/stats shows it: valid JSON laid out
// for reading with cat, one operation a line, in name order.
func (snap StatsSnapshot) JSON() []byte {
	mustJSON := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil { // plain numbers, strings and maps: cannot happen
			panic("BUG: stats snapshot does not marshal: " + err.Error())
		}
		return b
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\"uptime_seconds\":%s,\n\"gomaxprocs\":%d,\n\"histogram_bounds_seconds\":%s,\n\"ops\":{",
		mustJSON(snap.UptimeSeconds), snap.GOMAXPROCS, mustJSON(snap.HistogramBoundsSeconds))
	for i, name := range slices.Sorted(maps.Keys(snap.Ops)) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "\n  %s:%s", mustJSON(name), mustJSON(snap.Ops[name]))
	}
	b.WriteString("\n}}\n")
	return b.Bytes()
}

// errnoString is an errno's symbolic name: "ENOENT", or "errno 200".
func errnoString(en syscall.Errno) string {
	if n := unix.ErrnoName(en); n != "" {
		return n
	}
	return "errno " + strconv.Itoa(int(en))
}

// statsFS counts every request into stats and, when log is set, logs it at
// Debug level. What it does not override (Init, String, SetDebug, Forget,
// OnUnmount and the rarer operations) goes to the node tree unchanged by
// embedding: in particular Init hands the node tree the *fuse.Server it
// needs for kernel notifications.
type statsFS struct {
	fuse.RawFileSystem
	stats *Stats
	log   *slog.Logger // nil: no per-operation log
}

// newStatsFS wraps raw. With log non-nil, every request is logged at Debug
// level (op, node, pid, name, errno, duration).
func newStatsFS(raw fuse.RawFileSystem, stats *Stats, log *slog.Logger) *statsFS {
	return &statsFS{RawFileSystem: raw, stats: stats, log: log}
}

var _ fuse.RawFileSystem = (*statsFS)(nil)

// done records a request that started at t0.
func (s *statsFS) done(o op, h *fuse.InHeader, name string, t0 time.Time, status fuse.Status) {
	d := time.Since(t0)
	s.stats.record(o, d, status)
	if s.log == nil || !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	attrs := []slog.Attr{
		slog.String("op", o.String()),
		slog.Uint64("node", h.NodeId),
		slog.Uint64("pid", uint64(h.Caller.Pid)),
	}
	if name != "" {
		attrs = append(attrs, slog.String("name", name))
	}
	en := "OK"
	if status != fuse.OK {
		en = errnoString(syscall.Errno(status))
	}
	attrs = append(attrs, slog.String("errno", en), slog.Duration("duration", d))
	s.log.LogAttrs(context.Background(), slog.LevelDebug, "fuse", attrs...)
}

// Lookup counts a negative entry (success with node 0, as go-fuse answers
// ENOENT when a negative timeout is set) as the ENOENT the caller sees.
func (s *statsFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Lookup(cancel, h, name, out)
	seen := st
	if st == fuse.OK && out.NodeId == 0 {
		seen = fuse.ENOENT
	}
	s.done(opLookup, h, name, t0, seen)
	return st
}

func (s *statsFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.GetAttr(cancel, in, out)
	s.done(opGetAttr, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.SetAttr(cancel, in, out)
	s.done(opSetAttr, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Access(cancel, in)
	s.done(opAccess, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Open(cancel, in, out)
	s.done(opOpen, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Create(cancel, in, name, out)
	s.done(opCreate, &in.InHeader, name, t0, st)
	return st
}

// Read counts the time to produce the data; a ReadResult that is filled
// only when the reply is written (splice) is not in it. Reads the kernel
// serves by passthrough never reach the server and are not counted.
func (s *statsFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	t0 := time.Now()
	r, st := s.RawFileSystem.Read(cancel, in, buf)
	s.done(opRead, &in.InHeader, "", t0, st)
	return r, st
}

// Writev is how go-fuse delivers every write; it falls back to Write only
// when Writev answers ENOSYS, which is then not counted twice.
func (s *statsFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := s.RawFileSystem.Writev(cancel, in, data)
	if st != fuse.ENOSYS {
		s.done(opWrite, &in.InHeader, "", t0, st)
	}
	return n, st
}

func (s *statsFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := s.RawFileSystem.Write(cancel, in, data)
	s.done(opWrite, &in.InHeader, "", t0, st)
	return n, st
}

func (s *statsFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Flush(cancel, in)
	s.done(opFlush, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Fsync(cancel, in)
	s.done(opFsync, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	t0 := time.Now()
	s.RawFileSystem.Release(cancel, in)
	s.done(opRelease, &in.InHeader, "", t0, fuse.OK)
}

func (s *statsFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.OpenDir(cancel, in, out)
	s.done(opOpenDir, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.ReadDir(cancel, in, out)
	s.done(opReadDir, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.ReadDirPlus(cancel, in, out)
	s.done(opReadDirPlus, &in.InHeader, "", t0, st)
	return st
}

func (s *statsFS) ReleaseDir(in *fuse.ReleaseIn) {
	t0 := time.Now()
	s.RawFileSystem.ReleaseDir(in)
	s.done(opReleaseDir, &in.InHeader, "", t0, fuse.OK)
}

func (s *statsFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Unlink(cancel, h, name)
	s.done(opUnlink, h, name, t0, st)
	return st
}

func (s *statsFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Rmdir(cancel, h, name)
	s.done(opRmdir, h, name, t0, st)
	return st
}

func (s *statsFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Mkdir(cancel, in, name, out)
	s.done(opMkdir, &in.InHeader, name, t0, st)
	return st
}

func (s *statsFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Rename(cancel, in, oldName, newName)
	s.done(opRename, &in.InHeader, oldName+" -> "+newName, t0, st)
	return st
}

func (s *statsFS) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := s.RawFileSystem.GetXAttr(cancel, h, attr, dest)
	s.done(opGetXAttr, h, attr, t0, st)
	return n, st
}

func (s *statsFS) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	t0 := time.Now()
	n, st := s.RawFileSystem.ListXAttr(cancel, h, dest)
	s.done(opListXAttr, h, "", t0, st)
	return n, st
}

func (s *statsFS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.SetXAttr(cancel, in, attr, data)
	s.done(opSetXAttr, &in.InHeader, attr, t0, st)
	return st
}

func (s *statsFS) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.RemoveXAttr(cancel, h, attr)
	s.done(opRemoveXAttr, h, attr, t0, st)
	return st
}

func (s *statsFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.StatFs(cancel, h, out)
	s.done(opStatFs, h, "", t0, st)
	return st
}

func (s *statsFS) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	t0 := time.Now()
	st := s.RawFileSystem.Statx(cancel, in, out)
	s.done(opStatx, &in.InHeader, "", t0, st)
	return st
}

// The .theater directory at the mount's top holds the file system's own
// files: stats, a JSON snapshot of the counters.
const (
	inoTheaterDir = 5
	inoStats      = 6
)

// statsNode is .theater/stats: read-only, its content made at open. Like
// the files of /proc it shows size 0 and is read with direct I/O to its
// end: a size from a stat would be another snapshot's, and a size larger
// than the open's content makes tools such as grep take the rest for a
// hole of NUL bytes.
type statsNode struct {
	fusefs.Inode
	fs    *fsys
	stats *Stats
}

var _ = (fusefs.NodeGetattrer)((*statsNode)(nil))

func (n *statsNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	now := time.Now()
	n.fs.fileAttr(&out.Attr, 0o444, 0, now)
	out.SetTimeout(0)
	return 0
}

var _ = (fusefs.NodeOpener)((*statsNode)(nil))

func (n *statsNode) Open(ctx context.Context, flags uint32) (fusefs.FileHandle, uint32, syscall.Errno) {
	if flags&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_APPEND) != 0 {
		return nil, 0, n.fs.refuseChange()
	}
	return &statsHandle{data: n.stats.Snapshot().JSON()}, fuse.FOPEN_DIRECT_IO, 0
}

var (
	_ = (fusefs.NodeSetattrer)((*statsNode)(nil))
	_ = (fusefs.NodeGetxattrer)((*statsNode)(nil))
	_ = (fusefs.NodeListxattrer)((*statsNode)(nil))
	_ = (fusefs.NodeSetxattrer)((*statsNode)(nil))
	_ = (fusefs.NodeRemovexattrer)((*statsNode)(nil))
)

func (n *statsNode) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return n.fs.refuseChange()
}

// Getxattr: no blob is behind the file, so it has no attributes.
func (n *statsNode) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	return 0, syscall.ENODATA
}

func (n *statsNode) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return 0, 0
}

func (n *statsNode) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return n.fs.refuseChange()
}

func (n *statsNode) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return n.fs.refuseChange()
}

// statsHandle is one open of .theater/stats: the snapshot made at open.
type statsHandle struct{ data []byte }

var _ = (fusefs.FileReader)((*statsHandle)(nil))

func (h *statsHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if off >= int64(len(h.data)) {
		return fuse.ReadResultData(nil), 0
	}
	end := min(off+int64(len(dest)), int64(len(h.data)))
	return fuse.ReadResultData(h.data[off:end]), 0
}
