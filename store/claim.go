package store

import (
	"errors"
	"io/fs"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A claim lets a small blob be acknowledged after one flush instead of two.
//
// Without one, a blob's content must be durable before its rename into
// data/ (else a crash could leave a torn blob under a good name), and the
// rename durable before the writer is told: two flushes, one after the
// other. With a claim, the writer marks its spool with the hash it must
// have (an extended attribute), and one flush makes content and mark
// durable together. The owner then links the spool into data/ and answers
// at once; the spool's name in tmp/ stays until a later flush has made the
// link durable, and only then does the syncer unlink it, and remove the
// claim: blobs in data/ keep none.
//
// A crash in between leaves a spool in tmp/ that carries a claim. Open
// hashes it: content that matches its claim was (or may have been)
// acknowledged, and is put in data/ if it is not there whole; content that
// does not was never acknowledged (its flush did not finish), and is
// removed like any leftover. A spool without a claim is removed as before.
//
// Where a file system refuses user extended attributes, stores go the way
// of two flushes.

// claimAttr is the extended attribute holding a spool's claimed hash, the
// 20 bytes of its SHA-1.
const claimAttr = "user.theater-storefs.sha1"

// claims is a store's state of claims.
type claims struct {
	// refused is set once the file system refuses a claim.
	refused atomic.Bool
	// failed is set by the first flush that fails: from then on no flush
	// can vouch for a link (the kernel reports a lost write once, to one
	// caller), so claimed spools stay in tmp/ for the next Open.
	failed atomic.Bool
	// out counts claimed spools linked (or found) in data/ whose names
	// in tmp/ the syncer has not unlinked yet.
	out atomic.Int64
}

// mark sets f's claim to h, and reports whether it holds one.
func (cl *claims) mark(fd int, h Hash) bool {
	if cl.refused.Load() {
		return false
	}
	err := unix.Fsetxattr(fd, claimAttr, h[:], 0)
	if errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM) {
		cl.refused.Store(true)
	}
	return err == nil
}

// readClaim returns the hash a spool claims, if it carries one.
func readClaim(fd int) (Hash, bool) {
	var h Hash
	n, err := unix.Fgetxattr(fd, claimAttr, h[:])
	return h, err == nil && n == len(h)
}

// unclaim removes a claim from a blob in data/: once its name there is
// durable the claim has no use, and tmp/ is all a store of ours adds to
// Theater's. A claim left behind (a crash just then) is harmless.
func unclaim(fd int) { unix.Fremovexattr(fd, claimAttr) }

// rescue makes sure the content of a leftover claimed spool (f, tmp/name)
// is in data/ whole and durable, if it hashes to its claim h: its commit
// may have been acknowledged. Content that does not match was never
// acknowledged. A nil error means the spool may go.
func (s *Store) rescue(name string, f *os.File, h Hash, do func(func() error) error) error {
	sum, _, err := HashReader(f)
	switch {
	case errors.Is(err, ErrCollision):
		return nil // no content of ours
	case err != nil:
		return err // unread, it may be the only copy: kept
	case sum != h:
		return nil // torn or cut short: its flush never finished
	}
	// Its writer may have died before the flush: what was read back may
	// be only in the page cache. So it is flushed, with its link count if
	// it is linked into data/ already, before anything depends on it.
	if err := f.Sync(); err != nil {
		return err
	}
	spool, err := f.Stat()
	if err != nil {
		return err
	}
	placed, err := s.placed(h, spool)
	if err != nil {
		return err
	}
	if !placed {
		err = do(func() error {
			tmp, data := int(s.tmpDir.Fd()), int(s.dataDir.Fd())
			err := unix.Linkat(tmp, name, data, h.String(), 0)
			if errors.Is(err, unix.EEXIST) {
				// Put there since it was looked for.
				if placed, err = s.placed(h, spool); err != nil || placed {
					return err
				}
				// Not whole: the good copy takes its place.
				return unix.Renameat(tmp, name, data, h.String())
			}
			if err == nil {
				err = f.Sync() // its link count, now 2
			}
			return err
		})
		if err != nil {
			return err
		}
		s.log.Info("recovered a blob from an interrupted commit", "hash", h.String())
	}
	if err := s.syncData(); err != nil {
		return err
	}
	unclaim(int(f.Fd()))
	return nil
}

// placed reports whether data/ holds the blob h whole and durable: the
// spool itself, linked, or another copy, which is flushed here (a crashed
// writer's, or Theater's, may be in the page cache alone).
func (s *Store) placed(h Hash, spool os.FileInfo) (bool, error) {
	fi, err := s.data.Lstat(h.String())
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, err
	case os.SameFile(fi, spool):
		return true, nil
	case !fi.Mode().IsRegular():
		return false, nil
	}
	f, err := s.data.Open(h.String())
	if err != nil {
		return false, err
	}
	defer f.Close()
	if sum, _, err := HashReader(f); err != nil || sum != h {
		return false, nil
	}
	return true, f.Sync()
}
