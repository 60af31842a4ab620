package store

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
)

// verdictCache remembers whether a blob's content hashes to its name, keyed
// by the file's inode, size, mtime and ctime, so each blob is hashed once in
// its life. Verdicts are appended to tmp/verified and reloaded by the next
// Open, so they survive remounts. A changed file (new inode, size, mtime or
// ctime) is verified again: the ctime catches a rewrite in place that kept
// the size and put the old mtime back (touch -d), which no one can do to
// the ctime.
//
// Memory stays bounded at any store size: at most verdictsMax verdicts are
// held, and when that fills up a quarter of them, picked at random, are
// dropped (their blobs are hashed again if opened again). The log is
// rewritten with what is held once it has grown to several times that.
//
// Record format, one a line:
// "<hash> <ino> <size> <mtime-ns> <ctime-ns> <ok 1|0>". Lines of another
// shape (the 5-field lines of earlier versions, a torn last line) are
// ignored: those blobs are verified again.
type verdictCache struct {
	path     string
	readOnly bool
	log      *slog.Logger

	misses atomic.Int64 // lookups that found no verdict: blobs hashed

	load  sync.Once
	mu    sync.Mutex
	m     map[Hash]verdict
	out   *os.File // append handle, opened lazily
	lines int      // records in the log, as far as this process knows
	// While held, records wait in pending and go to the log in one write
	// at the last release: the owner holds the log over a batch of
	// commits, the syncer over the claimed spools it unlinks.
	held    int
	pending []byte
}

// verdictsMax is how many verdicts are held in memory (about 80 bytes
// each); the log is compacted when it holds more than logSlack times that.
var verdictsMax = 1 << 17

const logSlack = 4

type verdict struct {
	key verdictKey
	ok  bool
	// prev is the version before the last refresh, still good for a stat
	// taken before it: it was verified as much as key.
	prev verdictKey
}

// verdictKey identifies one version of a blob file.
type verdictKey struct {
	ino, size    uint64
	mtime, ctime int64
}

func newVerdictCache(path string, readOnly bool, log *slog.Logger) *verdictCache {
	return &verdictCache{path: path, readOnly: readOnly, log: log, m: map[Hash]verdict{}}
}

func keyOf(fi os.FileInfo) verdictKey {
	k := verdictKey{size: uint64(fi.Size()), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		k.ino = st.Ino
		k.ctime = st.Ctim.Nano()
	}
	return k
}

// lookup returns the remembered verdict for this version of the file.
func (vc *verdictCache) lookup(h Hash, fi os.FileInfo) (ok, known bool) {
	vc.load.Do(vc.readLog)
	k := keyOf(fi)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	v, found := vc.m[h]
	if !found || (v.key != k && v.prev != k) {
		vc.misses.Add(1)
		return false, false
	}
	return v.ok, true
}

// record remembers a verdict, in memory and in the log.
func (vc *verdictCache) record(h Hash, fi os.FileInfo, ok bool) {
	vc.load.Do(vc.readLog)
	k := keyOf(fi)
	v := verdict{key: k, ok: ok}
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if old, found := vc.m[h]; found && old.key == v.key && old.ok == v.ok {
		return
	}
	vc.put(h, v)
	vc.write(h, v)
}

// write logs a verdict: now, or at the last release. Locked.
func (vc *verdictCache) write(h Hash, v verdict) {
	if vc.readOnly {
		return
	}
	rec := formatVerdict(h, v)
	if vc.held > 0 {
		vc.pending = append(vc.pending, rec...)
		return
	}
	vc.append(rec)
}

// refresh carries a good verdict over to the version after a change of the
// file's own making: the unlink of a claimed spool's second name, which
// moves only its ctime. before is the file as it was just before the
// change; a verdict that no longer matches it is left alone.
func (vc *verdictCache) refresh(h Hash, before, after os.FileInfo) {
	vc.load.Do(vc.readLog)
	kb, ka := keyOf(before), keyOf(after)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	v, found := vc.m[h]
	if !found || !v.ok || v.key != kb || kb == ka {
		return
	}
	if ka.ino != kb.ino || ka.size != kb.size || ka.mtime != kb.mtime {
		return // a write came between (or a rename over): not ours alone
	}
	v = verdict{key: ka, ok: true, prev: kb}
	vc.m[h] = v
	vc.write(h, v)
}

// hold makes records wait until release, which writes them to the log at
// once.
func (vc *verdictCache) hold() {
	vc.mu.Lock()
	vc.held++
	vc.mu.Unlock()
}

func (vc *verdictCache) release() {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.held--; vc.held > 0 {
		return
	}
	if len(vc.pending) > 0 && !vc.readOnly {
		vc.append(vc.pending)
	}
	vc.pending = vc.pending[:0]
}

// append writes whole records to the log. Locked.
func (vc *verdictCache) append(recs []byte) {
	if vc.out == nil {
		f, err := os.OpenFile(vc.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
		if err != nil {
			vc.log.Warn("cannot remember verified blobs; they will be hashed again next time", "err", err)
			vc.readOnly = true
			return
		}
		vc.out = f
	}
	// One write of whole records, with O_APPEND, so records from several
	// processes never interleave.
	if _, err := vc.out.Write(recs); err != nil {
		vc.log.Warn("cannot remember verified blobs", "err", err)
		return
	}
	if vc.lines += bytes.Count(recs, []byte{'\n'}); vc.lines > logSlack*verdictsMax {
		vc.compact()
	}
}

// readLog loads the verdicts that earlier runs recorded. Malformed lines
// (a torn last line after a crash) are ignored.
func (vc *verdictCache) readLog() {
	f, err := os.OpenFile(vc.path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	vc.mu.Lock()
	defer vc.mu.Unlock()
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) != 6 {
			continue
		}
		h, err := ParseHash(string(fields[0]))
		if err != nil {
			continue
		}
		ino, e1 := strconv.ParseUint(string(fields[1]), 10, 64)
		size, e2 := strconv.ParseUint(string(fields[2]), 10, 64)
		mtime, e3 := strconv.ParseInt(string(fields[3]), 10, 64)
		ctime, e4 := strconv.ParseInt(string(fields[4]), 10, 64)
		if e1 != nil || e2 != nil || e3 != nil || e4 != nil {
			continue
		}
		vc.put(h, verdict{key: verdictKey{ino: ino, size: size, mtime: mtime, ctime: ctime}, ok: string(fields[5]) == "1"})
		vc.lines++
	}
	if !vc.readOnly && vc.lines > logSlack*verdictsMax {
		vc.compact()
	}
}

// put holds a verdict, dropping others at random when full. Locked.
func (vc *verdictCache) put(h Hash, v verdict) {
	if _, found := vc.m[h]; !found && len(vc.m) >= verdictsMax {
		drop := len(vc.m) / 4
		for k := range vc.m { // Go's map order is random
			if drop == 0 {
				break
			}
			delete(vc.m, k)
			drop--
		}
	}
	vc.m[h] = v
}

// compact replaces the log with the verdicts held: written to a file
// beside it, then renamed over it. Another process's appends to the old
// log since this one read it are lost; those blobs are hashed again.
// Locked.
func (vc *verdictCache) compact() {
	if err := vc.rewriteLog(); err != nil {
		vc.log.Warn("cannot compact the log of verified blobs", "err", err)
	}
}

// rewriteLog does compact's work; it returns nil also when it leaves the
// work to another process.
func (vc *verdictCache) rewriteLog() error {
	tmp := vc.path + ".compact"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	// Another process compacting at the same moment holds the lock: leave
	// it to that one.
	if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
		return nil
	}
	// And a file it renamed into the log since this one opened it is the
	// log now, not to be truncated.
	var held, named syscall.Stat_t
	if syscall.Fstat(int(f.Fd()), &held) != nil || syscall.Stat(tmp, &named) != nil || held.Ino != named.Ino {
		return nil
	}
	if err := f.Truncate(0); err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for h, v := range vc.m {
		w.Write(formatVerdict(h, v))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if err := os.Rename(tmp, vc.path); err != nil {
		return err
	}
	if vc.out != nil {
		vc.out.Close()
		vc.out = nil // reopened at the next record: the new log
	}
	vc.lines = len(vc.m)
	return nil
}

func formatVerdict(h Hash, v verdict) []byte {
	okc := 0
	if v.ok {
		okc = 1
	}
	return fmt.Appendf(nil, "%s %d %d %d %d %d\n", h, v.key.ino, v.key.size, v.key.mtime, v.key.ctime, okc)
}

// forget drops a verdict, for a blob that was removed.
func (vc *verdictCache) forget(h Hash) {
	vc.mu.Lock()
	delete(vc.m, h)
	vc.mu.Unlock()
}

func (vc *verdictCache) close() {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	// A reader that got its file just before Close may still record a
	// verdict: keep it in memory only, rather than reopen (and leak) the log.
	vc.readOnly = true
	if vc.out != nil {
		vc.out.Close()
		vc.out = nil
	}
}
