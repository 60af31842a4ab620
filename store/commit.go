package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// commit asks the owner to move a finished spool into data/ and, if mode
// says so, to update a label.
type commit struct {
	tmp   string // name in tmp/
	f     *os.File
	sum   Hash
	size  int64
	label string
	mode  LabelMode
	reply chan commitResult

	seq  uint64 // its spool's
	back bool   // it goes to the owner through the syncer, once its spool is durable
	// The syncer waits for the owner to hand it back or say it settled it
	// (an unclaimed one).
	awaited bool
	// Its spool carries a claim (claim.go): once the spool is durable the
	// owner links it into data/ and answers at once (claimed), unless the
	// commit turns out to need a rename (then only marked).
	claimed, marked bool

	err     error
	renamed bool
}

type commitResult struct{ err error }

// commitBatch makes a group of commits durable together. Their content is
// durable already (Spool.Commit saw to it, with the syncer for small
// spools); every blob is renamed into data/ (or found there already), and
// the renames are made durable by one sync of data/: the owner's own when
// labels are to be written, else the syncer's next flush, which the owner
// does not wait for. Labels are written last, their directories synced
// once each.
//
// With NoGroupCommit every blob pays its own fsyncs, one after another: the
// baseline the benchmarks compare against.
func (s *Store) commitBatch(batch []*commit) {
	if s.opts.NoGroupCommit {
		for _, c := range batch {
			if c.err = c.f.Sync(); c.err != nil {
				c.err = blobErr(c.sum, c.err)
				continue
			}
			if c.err = s.placeBlob(c, s.statBlob(c)); c.err != nil {
				continue
			}
			if c.renamed {
				s.renamed.Add(1)
			}
			if err := s.dataDurable(); err != nil {
				c.err = blobErr(c.sum, err)
			}
		}
	} else {
		awaited := sentBack(batch)
		anyRenamed, labels := false, false
		var unlinks []*commit // claimed commits, linked or found in place
		rest := batch[:0]     // the others, answered below
		s.verdicts.hold()     // one write to the log for the batch
		for _, c := range batch {
			if c.err == nil {
				c.err = s.placeBlob(c, s.statBlob(c))
				anyRenamed = anyRenamed || c.renamed
				labels = labels || c.mode != LabelNone
			}
			if c.claimed && c.err == nil {
				// Its claimed spool stays in tmp/ until a flush has
				// made the link durable: a crash meanwhile puts it
				// back in data/ at Open. So it is answered now.
				s.claims.out.Add(1)
				c.reply <- commitResult{}
				unlinks = append(unlinks, c)
				continue
			}
			rest = append(rest, c)
		}
		s.verdicts.release()
		if anyRenamed {
			s.renamed.Add(1)
		}
		batch = rest
		if s.durable.Load() < s.renamed.Load() && !labels {
			// Some blob in data/ may not be durable, maybe one of this
			// batch found in place, so every commit waits for a sync:
			// the syncer's next.
			s.handToSyncer(batch, awaited, unlinks)
			return
		}
		if awaited > 0 || len(unlinks) > 0 {
			s.back.put(nil, awaited, unlinks)
		}
		if s.durable.Load() < s.renamed.Load() {
			if err := s.syncData(); err != nil {
				// Every commit of the batch fails, also one that found
				// its blob in place: the name may be one this batch (or
				// an earlier failed one) renamed and never made durable.
				for _, c := range batch {
					if c.err == nil {
						c.err = blobErr(c.sum, err)
					}
				}
			}
		}
	}
	lw := s.newLabelWriter()
	for _, c := range batch {
		if c.err != nil || c.mode == LabelNone {
			continue
		}
		c.err = s.applyLabel(lw, c.label, c.sum, c.mode)
	}
	if err := lw.finish(); err != nil {
		for _, c := range batch {
			if c.err == nil && c.mode != LabelNone {
				c.err = labelErr(c.label, err)
			}
		}
	}
	for _, c := range batch {
		c.reply <- commitResult{err: c.err}
	}
}

// handToSyncer leaves the acknowledgement of label-less commits to the
// syncer, after its next flush. Those that failed are answered now. With
// them go how many of the syncer's commits the owner is done with, and the
// claimed spools to unlink.
func (s *Store) handToSyncer(batch []*commit, awaited int, unlinks []*commit) {
	var wait []*commit
	for _, c := range batch {
		if c.err != nil {
			c.reply <- commitResult{err: c.err}
			continue
		}
		wait = append(wait, c)
	}
	// The syncer runs until the owner has exited, so it answers these.
	s.back.put(wait, awaited, unlinks)
}

func sentBack(batch []*commit) int {
	n := 0
	for _, c := range batch {
		if c.awaited {
			n++
		}
	}
	return n
}

// syncData fsyncs data/, making every rename into it so far durable.
func (s *Store) syncData() error {
	epoch, start := s.renamed.Load(), fileClock()
	if err := s.syncDir(s.dataDir); err != nil {
		s.claims.failed.Store(true)
		return fmt.Errorf("syncing data/: %w", err)
	}
	s.markSynced(epoch, start)
	return nil
}

// fileClock reads the clock the kernel stamps files with: the coarse one,
// up to a tick behind the precise one. A file changed after this reading
// has a ctime no earlier; one changed just before may have the same.
func fileClock() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &ts) != nil {
		return 0 // every blob found counts as changed since
	}
	return ts.Nano()
}

// noteFound is told of every blob the owner finds in data/ to depend on
// (a duplicate, a blob to label): one that changed since the last sync of
// data/ began may be another process's rename, not durable yet, so it
// counts as a rename of this one's. On the owner.
func (s *Store) noteFound(h Hash, fi os.FileInfo) {
	if s.ownRenames[h] {
		return // the epochs tell whether its rename is durable
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Ctim.Nano() >= s.syncedAt.Load() {
		s.renamed.Add(1)
	}
}

// ownRename notes a blob this process renamed into data/. On the owner.
func (s *Store) ownRename(h Hash) {
	if len(s.ownRenames) >= ownRenamesMax {
		clear(s.ownRenames) // those found again get the ctime test
	}
	s.ownRenames[h] = true
}

const ownRenamesMax = 4096

// dataDurable syncs data/ if a rename into it may not be durable yet: a
// label must never point at a blob a crash could take back.
func (s *Store) dataDurable() error {
	if s.durable.Load() < s.renamed.Load() {
		return s.syncData()
	}
	return nil
}

// blobStat is what data/ holds under a commit's name before it is placed.
type blobStat struct {
	fi  os.FileInfo
	err error
}

func (s *Store) statBlob(c *commit) blobStat {
	fi, err := s.data.Lstat(c.sum.String())
	return blobStat{fi, err}
}

// verifyExisting verifies the blob already stored under h, if there is
// one: storing content again must not deduplicate it into a blob that does
// not hash to its name (SPEC: dedup does not trust the name alone). The
// writer calls it before its commit, so the hashing is done outside the
// owner, whose dedup then finds the verdict.
//
// New content, the usual case, costs no trip to the owner: the writer looks
// in data/ itself first. A blob put there after it looked is no danger: the
// owner finds no verdict for it and renames the spool, which hashes to the
// name, over it.
func (s *Store) verifyExisting(ctx context.Context, h Hash) error {
	var st unix.Stat_t
	err := inDir(s.dataDir, func(dir int) error {
		return unix.Fstatat(dir, h.String(), &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	f, _, err := s.Open(ctx, h)
	switch {
	case errors.Is(err, ErrNotFound):
		return nil
	case errors.Is(err, ErrCorrupt):
		return corruptBlob(h)
	case err != nil:
		return err
	}
	return f.Close()
}

// touchBlob sets a whole blob's times to now, through a descriptor of the
// file that was verified (fi), and keeps its verdict for the new times,
// unless the file changed since: a rename over it leaves this one alone,
// a write in place shows in its times.
func (s *Store) touchBlob(h Hash, fi os.FileInfo) {
	f, cur, err := s.openBlob(h)
	if err != nil {
		return // gone since: the commit renames nothing, gc's grace is moot
	}
	defer f.Close()
	if keyOf(cur) != keyOf(fi) {
		return
	}
	if err := unix.Futimes(int(f.Fd()), nil); err != nil {
		s.log.Warn("cannot refresh mtime of existing blob", "hash", h.String(), "err", err)
		return
	}
	if after, err := f.Stat(); err == nil {
		s.verdicts.record(h, after, true)
	}
}

// corruptBlob is the error of storing content whose blob in data/ does
// not hash to its name, with what to do about it.
func corruptBlob(h Hash) error {
	return blobErr(h, fmt.Errorf("%w: data/%s does not hash to its name; remove it, then store again", ErrCorrupt, h))
}

// placeBlob renames the spool into data/, unless the blob is there already
// (st says what data/ held under its name).
func (s *Store) placeBlob(c *commit, st blobStat) error {
	name := c.sum.String()
	fi, err := st.fi, st.err
	switch {
	case err == nil:
		if !fi.Mode().IsRegular() {
			return blobErr(c.sum, fmt.Errorf("%w: data/%s is not a regular file", ErrCorrupt, name))
		}
		if fi.Size() != c.size {
			return blobErr(c.sum, fmt.Errorf("%w: existing blob has %d bytes, content has %d; remove data/%s, then store again", ErrCorrupt, fi.Size(), c.size, name))
		}
		// The writer verified it (verifyExisting); the owner looks the
		// verdict up and never hashes, which would hold up every other
		// request for as long as a large blob takes.
		switch good, known := s.verdicts.lookup(c.sum, fi); {
		case known && !good:
			return corruptBlob(c.sum)
		case known:
			// Dedup. Refresh the mtime so gc's grace period protects a
			// blob that is being stored again, about to be labelled.
			s.noteFound(c.sum, fi)
			s.touchBlob(c.sum, fi)
			if !c.claimed {
				// A claimed spool stays until the next flush, in case
				// the blob found is a rename not durable yet.
				s.removeTemp(c.tmp)
			}
			return nil
		}
		// Put there or changed since the writer looked (by another
		// process, or a writer of the same content): the spool, which
		// hashes to the name, takes its place, and the commit waits for
		// the rename to be durable.
		c.claimed = false
	case !errors.Is(err, fs.ErrNotExist):
		return blobErr(c.sum, err)
	}
	// On the owner: data/ and tmp/ stay open until it has exited.
	if err := s.moveSpool(c, name); err != nil {
		return blobErr(c.sum, err)
	}
	c.renamed = true
	s.ownRename(c.sum)
	// The content was durable before the rename, so the verdict holds
	// whatever becomes of the rename.
	if fi, err := c.f.Stat(); err == nil {
		s.verdicts.record(c.sum, fi, true)
	}
	return nil
}

// moveSpool puts a spool into data/ under name: a claimed one as a second
// link (its name in tmp/ goes after the next flush), else by a rename.
func (s *Store) moveSpool(c *commit, name string) error {
	tmp, data := int(s.tmpDir.Fd()), int(s.dataDir.Fd())
	if c.claimed {
		err := unix.Linkat(tmp, c.tmp, data, name, 0)
		if !errors.Is(err, unix.EEXIST) {
			return err
		}
		// Put there since it was looked for: renamed over, as above.
		c.claimed = false
	}
	if c.marked {
		// The commit is answered once the rename is durable, so the
		// claim is no longer needed, and a blob keeps none.
		unclaim(int(c.f.Fd()))
	}
	return unix.Renameat(tmp, c.tmp, data, name)
}

// labelWriter writes label files atomically and syncs each touched
// directory once at the end.
type labelWriter struct {
	s    *Store
	dirs map[string]bool // directories under labels/ to sync
}

func (s *Store) newLabelWriter() *labelWriter {
	return &labelWriter{s: s, dirs: map[string]bool{}}
}

// write replaces labels/<name> with refs: a temp file in tmp/, fsynced,
// renamed over the label. Never a torn label.
func (lw *labelWriter) write(name string, refs []Hash) error {
	s := lw.s
	if err := s.checkLabelPath(name, true); err != nil {
		return err
	}
	if err := s.dataDurable(); err != nil {
		return labelErr(name, err)
	}
	dir := path.Dir(name)
	if err := lw.mkdirAll(dir); err != nil {
		return labelErr(name, err)
	}
	tmp, f, err := s.createTemp(labelPrefix)
	if err != nil {
		return labelErr(name, err)
	}
	defer f.Close()
	_, err = f.Write(FormatLabelFile(refs))
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = s.root.Rename(TmpDir+"/"+tmp, LabelsDir+"/"+name)
	}
	if err != nil {
		s.removeTemp(tmp)
		return labelErr(name, err)
	}
	lw.dirs[dir] = true
	return nil
}

// mkdirAll makes a namespace and its missing parents under labels/, and
// notes the directory holding each new one, so finish makes every new
// directory's entry durable, not just the last.
func (lw *labelWriter) mkdirAll(dir string) error {
	if dir == "." || dir == "" {
		return nil
	}
	comps := strings.Split(dir, "/")
	for i := range comps {
		p := strings.Join(comps[:i+1], "/")
		if _, err := lw.s.labels.Lstat(p); !errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := lw.s.labels.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		for j := i; j < len(comps); j++ {
			lw.dirs[path.Dir(strings.Join(comps[:j+1], "/"))] = true
		}
		return nil
	}
	return nil
}

// remove deletes labels/<name>.
func (lw *labelWriter) remove(name string) error {
	if err := lw.s.labels.Remove(name); err != nil {
		return labelErr(name, notFound(err))
	}
	lw.dirs[path.Dir(name)] = true
	return nil
}

// finish syncs every directory the writes touched.
func (lw *labelWriter) finish() error {
	for dir := range lw.dirs {
		d, err := lw.s.labels.Open(dir)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since, e.g. rmdir of an emptied namespace
		}
		if err != nil {
			return err
		}
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("syncing labels/%s: %w", dir, err)
		}
	}
	clear(lw.dirs)
	return nil
}

// applyLabel points a label at sum, appending or replacing.
func (s *Store) applyLabel(lw *labelWriter, name string, sum Hash, mode LabelMode) error {
	if mode == LabelReplace {
		return lw.write(name, []Hash{sum})
	}
	refs, err := s.readLabelStrict(name)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	for _, r := range refs {
		if r == sum {
			return nil
		}
	}
	return lw.write(name, append(refs, sum))
}

// notFound turns the OS's "no such file" into ErrNotFound, keeping others.
func notFound(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return ErrNotFound
	}
	return err
}
