package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

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

	err     error
	renamed bool
}

type commitResult struct{ err error }

// commitBatch makes a group of commits durable together. Their content is
// durable already (Spool.Commit saw to it, with the syncer for small
// spools); every blob is renamed into data/ (or found there already),
// data/ is synced once, the labels are written, and their directories
// synced once each.
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
			if c.err = s.placeBlob(c, s.statBlob(c)); c.err == nil && (c.renamed || s.dataUnsynced) {
				if err := s.syncData(); err != nil {
					c.err = blobErr(c.sum, err)
				}
			}
		}
	} else {
		anyRenamed := false
		for _, c := range batch {
			if c.err == nil {
				c.err = s.placeBlob(c, s.statBlob(c))
				anyRenamed = anyRenamed || c.renamed
			}
		}
		if anyRenamed || s.dataUnsynced {
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
		if c.err == nil && c.renamed {
			if fi, err := c.f.Stat(); err == nil {
				s.verdicts.record(c.sum, fi, true)
			}
		}
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

// syncData fsyncs data/, making the renames into it durable. Until one
// succeeds after a failure, every commit syncs it again, also one that
// renamed nothing: the blob it found may be a rename not durable yet.
func (s *Store) syncData() error {
	err := s.syncDir(s.dataDir)
	s.dataUnsynced = err != nil
	if err != nil {
		return fmt.Errorf("syncing data/: %w", err)
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
			return blobErr(c.sum, fmt.Errorf("%w: existing blob has %d bytes, content has %d", ErrCorrupt, fi.Size(), c.size))
		}
		// Dedup. Refresh the mtime so gc's grace period protects a blob
		// that is being stored again, about to be labelled.
		now := time.Now()
		if err := s.data.Chtimes(name, now, now); err != nil {
			s.log.Warn("cannot refresh mtime of existing blob", "hash", name, "err", err)
		}
		s.removeTemp(c.tmp)
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return blobErr(c.sum, err)
	}
	// On the owner: data/ and tmp/ stay open until it has exited.
	if err := unix.Renameat(int(s.tmpDir.Fd()), c.tmp, int(s.dataDir.Fd()), name); err != nil {
		return blobErr(c.sum, err)
	}
	c.renamed = true
	return nil
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
