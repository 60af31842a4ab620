package store_test

import (
	"bytes"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"github.com/theater-storefs/theater-storefs/store"
	"golang.org/x/sys/unix"
)

// pseudoReader yields n deterministic pseudo-random bytes in odd-sized
// chunks, and is not a bytes.Reader or anything with a size.
type pseudoReader struct {
	r *rand.Rand
	n int64
}

func (p *pseudoReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if len(b) > 7777 {
		b = b[:7777]
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	p.r.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func TestPutStreaming(t *testing.T) {
	s, dir := newStore(t)
	const size = 5<<20 + 123
	want := sha1.New()
	io.Copy(want, &pseudoReader{rand.New(rand.NewSource(7)), size})
	var wantHash store.Hash
	copy(wantHash[:], want.Sum(nil))

	h, n, err := s.Put(bg, &pseudoReader{rand.New(rand.NewSource(7)), size})
	if err != nil {
		t.Fatal(err)
	}
	if n != size || h != wantHash {
		t.Fatalf("Put = %s, %d; want %s, %d", h, n, wantHash, size)
	}
	fi, err := os.Stat(blobPath(dir, h))
	if err != nil || fi.Size() != size {
		t.Fatalf("blob file: %v, %v", fi, err)
	}
	f, bi, err := s.Open(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := sha1.New()
	if _, err := io.Copy(got, f); err != nil {
		t.Fatal(err)
	}
	if bi.Size != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
		t.Fatal("streamed-back content differs")
	}
}

type failingReader struct {
	good []byte
	err  error
}

func (f *failingReader) Read(b []byte) (int, error) {
	if len(f.good) == 0 {
		return 0, f.err
	}
	n := copy(b, f.good)
	f.good = f.good[n:]
	return n, nil
}

func TestPutReaderError(t *testing.T) {
	s, dir := newStore(t)
	boom := errors.New("boom")
	_, _, err := s.PutLabeled(bg, &failingReader{good: []byte("partial content"), err: boom}, "l", store.LabelAppend)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the reader's error", err)
	}
	if names := dataNames(t, dir); len(names) != 0 {
		t.Fatalf("a failed Put left %v in data/", names)
	}
	if labelFileExists(dir, "l") {
		t.Fatal("a failed Put created its label")
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("a failed Put left %v in tmp/", left)
	}
}

func TestPutLabeledModes(t *testing.T) {
	s, _ := newStore(t)
	old := mustStore(t, s, "old")
	cases := []struct {
		mode store.LabelMode
		want func(h store.Hash) []store.Hash
	}{
		{store.LabelNone, nil},
		{store.LabelAppend, func(h store.Hash) []store.Hash { return []store.Hash{old, h} }},
		{store.LabelReplace, func(h store.Hash) []store.Hash { return []store.Hash{h} }},
	}
	for i, c := range cases {
		name := "l" + itoa(i)
		mustLabel(t, s, name, old)
		content := "content for mode " + itoa(int(c.mode))
		h, n, err := s.PutLabeled(bg, bytes.NewBufferString(content), name, c.mode)
		if err != nil {
			t.Fatalf("mode %d: %v", c.mode, err)
		}
		if h != shaStr(content) || n != int64(len(content)) {
			t.Fatalf("mode %d: %s, %d", c.mode, h, n)
		}
		if c.want == nil {
			wantRefs(t, s, name, old)
		} else {
			wantRefs(t, s, name, c.want(h)...)
		}
		if ok, _ := s.Exists(bg, h); !ok {
			t.Fatalf("mode %d: content not stored", c.mode)
		}
	}
	// With LabelNone the label argument is ignored, even if invalid.
	if _, _, err := s.PutLabeled(bg, bytes.NewBufferString("z"), "../ignored", store.LabelNone); err != nil {
		t.Fatalf("LabelNone with a junk label: %v", err)
	}
}

// spoolOp is one step applied both to a Spool and to a model of its content.
type spoolOp struct {
	write    string
	at       int64 // offset for WriteAt; -1 means Write (append)
	truncate int64 // when >= 0 and write == "", Truncate to this size
}

func w(s string) spoolOp              { return spoolOp{write: s, at: -1, truncate: -1} }
func wat(s string, off int64) spoolOp { return spoolOp{write: s, at: off, truncate: -1} }
func trunc(n int64) spoolOp           { return spoolOp{at: -1, truncate: n} }
func applyModel(m []byte, op spoolOp) []byte {
	switch {
	case op.write != "" && op.at < 0:
		return append(m, op.write...)
	case op.write != "":
		end := op.at + int64(len(op.write))
		for int64(len(m)) < end {
			m = append(m, 0)
		}
		copy(m[op.at:], op.write)
		return m
	default:
		for int64(len(m)) < op.truncate {
			m = append(m, 0)
		}
		return m[:op.truncate]
	}
}

func TestSpool(t *testing.T) {
	cases := []struct {
		name string
		ops  []spoolOp
	}{
		{"nothing", nil},
		{"sequential", []spoolOp{w("hello "), w("world")}},
		{"sequential WriteAt", []spoolOp{wat("hello ", 0), wat("world", 6)}},
		{"overwrite start", []spoolOp{w("hello world"), wat("J", 0)}},
		{"overwrite middle", []spoolOp{w("hello world"), wat("XX", 4)}},
		{"backwards", []spoolOp{wat("world", 6), wat("hello ", 0)}},
		{"gap filled with zeros", []spoolOp{w("a"), wat("z", 10)}},
		{"write at start, then append", []spoolOp{w("abc"), wat("X", 0), w("def")}},
		{"truncate shorter", []spoolOp{w("hello world"), trunc(5)}},
		{"truncate shorter then append", []spoolOp{w("hello world"), trunc(5), w("!")}},
		{"truncate to zero then write", []spoolOp{w("old content"), trunc(0), w("new")}},
		{"truncate longer", []spoolOp{w("abc"), trunc(10)}},
		{"truncate longer then write", []spoolOp{w("abc"), trunc(10), w("tail")}},
		{"truncate same size", []spoolOp{w("abc"), trunc(3), w("def")}},
		{"truncate down and back up", []spoolOp{w("abcdef"), trunc(2), trunc(6)}},
		{"truncate empty spool longer", []spoolOp{trunc(4096)}},
		{"write past a hole then fill it", []spoolOp{wat("end", 100), wat("start", 0)}},
		{"large overwrite", []spoolOp{w(string(bytes.Repeat([]byte("x"), 3<<20))), wat("middle", 1<<20), w("tail")}},
		// Aligned pieces go to the disk by O_DIRECT, the rest buffered.
		{"aligned pieces and a short tail", []spoolOp{w(mib('a', 1)), w(mib('b', 1)), w("tail")}},
		{"unaligned large pieces", []spoolOp{w(mib('a', 1)[:100000]), w(mib('b', 1)), w(mib('c', 1))}},
		{"aligned pieces, a short write, aligned again", []spoolOp{w(mib('a', 1)), w("x"), w(mib('b', 1)[:1<<20-1]), w(mib('c', 1))}},
		{"aligned pieces rewritten in the middle", []spoolOp{w(mib('a', 2)), wat("X", 4095), wat(mib('b', 1), 1<<20), w(mib('c', 1))}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, dir := newStore(t)
			sp, err := s.NewSpool()
			if err != nil {
				t.Fatal(err)
			}
			defer sp.Discard()
			var model []byte
			for _, op := range c.ops {
				switch {
				case op.write != "" && op.at < 0:
					if n, err := sp.Write([]byte(op.write)); err != nil || n != len(op.write) {
						t.Fatalf("Write: %d, %v", n, err)
					}
				case op.write != "":
					if n, err := sp.WriteAt([]byte(op.write), op.at); err != nil || n != len(op.write) {
						t.Fatalf("WriteAt: %d, %v", n, err)
					}
				default:
					if err := sp.Truncate(op.truncate); err != nil {
						t.Fatalf("Truncate: %v", err)
					}
				}
				model = applyModel(model, op)
				if sp.Size() != int64(len(model)) {
					t.Fatalf("Size = %d, want %d", sp.Size(), len(model))
				}
			}
			buf := make([]byte, len(model))
			if n, err := sp.ReadAt(buf, 0); n != len(model) || (err != nil && err != io.EOF) || !bytes.Equal(buf, model) {
				t.Fatalf("ReadAt before commit: %d, %v", n, err)
			}
			h, err := sp.Commit(bg, "spooled", store.LabelReplace)
			if err != nil {
				t.Fatal(err)
			}
			if want := sha(model); h != want {
				t.Fatalf("Commit hash %s, want SHA-1 of the content %s", h, want)
			}
			got, err := s.Get(bg, h)
			if err != nil || !bytes.Equal(got, model) {
				t.Fatalf("Get: %d bytes, %v", len(got), err)
			}
			wantRefs(t, s, "spooled", h)
			if left := tmpSpools(t, s, dir); len(left) != 0 {
				t.Fatalf("Commit left %v in tmp/", left)
			}
		})
	}
}

func TestSpoolReadFrom(t *testing.T) {
	s, _ := newStore(t)
	sp, err := s.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Discard()
	sp.Write([]byte("head:"))
	n, err := sp.ReadFrom(&pseudoReader{rand.New(rand.NewSource(1)), 3 << 20})
	if err != nil || n != 3<<20 {
		t.Fatalf("ReadFrom = %d, %v", n, err)
	}
	var model bytes.Buffer
	model.WriteString("head:")
	io.Copy(&model, &pseudoReader{rand.New(rand.NewSource(1)), 3 << 20})
	h, err := sp.Commit(bg, "", store.LabelNone)
	if err != nil {
		t.Fatal(err)
	}
	if h != sha(model.Bytes()) {
		t.Fatal("ReadFrom content hashed wrong")
	}
}

func TestSpoolConsumed(t *testing.T) {
	s, dir := newStore(t)
	sp, err := s.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	if got := tmpSpools(t, s, dir); len(got) != 1 {
		t.Fatalf("tmp/ = %v, want one spool", got)
	}
	// The spool's file is there for reading, e.g. to hand to the kernel.
	sp.Write([]byte("abc"))
	b := make([]byte, 3)
	if _, err := sp.File().ReadAt(b, 0); err != nil || string(b) != "abc" {
		t.Fatalf("File().ReadAt = %q, %v", b, err)
	}
	h, err := sp.Commit(bg, "", store.LabelNone)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sp.Write([]byte("more")); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write after Commit: %v", err)
	}
	if _, err := sp.WriteAt([]byte("more"), 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("WriteAt after Commit: %v", err)
	}
	if err := sp.Truncate(0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Truncate after Commit: %v", err)
	}
	if _, err := sp.Commit(bg, "", store.LabelNone); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("second Commit: %v", err)
	}
	sp.Discard() // no-op, must not remove the committed blob
	if got, err := s.Get(bg, h); err != nil || string(got) != "abc" {
		t.Fatalf("Get after Discard: %q, %v", got, err)
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v after commit", left)
	}

	// Discard without Commit leaves nothing anywhere.
	sp2, err := s.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	sp2.Write([]byte("discarded"))
	sp2.Discard()
	sp2.Discard()
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v after Discard", left)
	}
	if ok, _ := s.Exists(bg, shaStr("discarded")); ok {
		t.Fatal("discarded content was stored")
	}
	if names := dataNames(t, dir); len(names) != 1 {
		t.Fatalf("data/ = %v", names)
	}

	// A refused label leaves nothing stored either.
	sp3, _ := s.NewSpool()
	sp3.Write([]byte("refused"))
	if _, err := sp3.Commit(bg, "a//b", store.LabelAppend); !errors.Is(err, store.ErrInvalidLabel) {
		t.Fatalf("Commit with bad label: %v", err)
	}
	if ok, _ := s.Exists(bg, shaStr("refused")); ok {
		t.Fatal("content of a refused commit was stored")
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v after refused commit", left)
	}
}

func TestReadOnlyStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	rw := openAt(t, dir, store.Options{})
	h, err := rw.PutAtLabel(bg, "l", []byte("content"))
	if err != nil {
		t.Fatal(err)
	}
	rw.Close()
	before := treeSnapshot(t, dir)

	ro := openAt(t, dir, store.Options{ReadOnly: true})
	if b, err := ro.Get(bg, h); err != nil || string(b) != "content" {
		t.Fatalf("Get: %q, %v", b, err)
	}
	wantRefs(t, ro, "l", h)
	if _, err := ro.Store(bg, []byte("new")); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Store on read-only: %v", err)
	}
	if err := ro.Label(bg, "l2", h); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("Label on read-only: %v", err)
	}
	if err := ro.RemoveLabel(bg, "l"); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("RemoveLabel on read-only: %v", err)
	}
	if _, err := ro.Verify(bg, nil); err != nil {
		t.Fatal(err)
	}
	// An unreachable, old blob: gc on a read-only store must not remove it.
	orphan := []byte("orphan")
	if err := os.WriteFile(blobPath(dir, sha(orphan)), orphan, 0o644); err != nil {
		t.Fatal(err)
	}
	before = treeSnapshot(t, dir)
	if _, err := ro.GC(bg, store.GCOptions{Grace: -1}); !errors.Is(err, os.ErrPermission) {
		t.Fatalf("GC on read-only: %v, want a permission error", err)
	}
	if d := diffSnapshots(before, treeSnapshot(t, dir)); len(d) != 0 {
		t.Fatalf("read-only store changed: %v", d)
	}
}

// mib is n MiB of content that is not all one byte.
func mib(seed byte, n int) string {
	b := make([]byte, n<<20)
	for i := range b {
		b[i] = seed + byte(i/4093)
	}
	return string(b)
}

// TestSpoolDirectWrites: a large file written in aligned 1 MiB pieces (as
// cp writes) goes to the disk without passing through the page cache.
func TestSpoolDirectWrites(t *testing.T) {
	s, dir := newStore(t)
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		t.Skipf("%s is on tmpfs, whose files are all page cache", dir)
	}
	probe := filepath.Join(dir, "tmp", "direct-probe")
	if fd, err := unix.Open(probe, unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o600); err != nil {
		t.Skipf("the file system of %s refuses O_DIRECT: %v", dir, err)
	} else {
		unix.Close(fd)
		os.Remove(probe)
	}
	sp, err := s.NewSpool()
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Discard()
	content := mib('d', 8)
	for off := 0; off < len(content); off += 1 << 20 {
		if _, err := sp.Write([]byte(content[off : off+1<<20])); err != nil {
			t.Fatal(err)
		}
	}
	h, err := sp.Commit(bg, "direct", store.LabelReplace)
	if err != nil {
		t.Fatal(err)
	}
	if h != sha([]byte(content)) {
		t.Fatalf("Commit hash %s, want the SHA-1 of the content", h)
	}
	f, err := os.Open(filepath.Join(dir, "data", h.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, len(content), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pages := make([]byte, (len(content)+os.Getpagesize()-1)/os.Getpagesize())
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&pages[0]))); errno != 0 {
		t.Fatal("mincore:", errno)
	}
	resident := 0
	for _, p := range pages {
		resident += int(p & 1)
	}
	if resident > 0 {
		t.Errorf("%d of %d pages of a blob written in aligned pieces are in the page cache; want none (O_DIRECT)", resident, len(pages))
	}
	if got, err := s.Get(bg, h); err != nil || string(got) != content {
		t.Errorf("Get: %d bytes, %v", len(got), err)
	}
}

// Spool files made ahead of need are live spools like any other: a second
// store opened on the directory leaves them alone, and the first one stores
// through them afterwards. Those nobody took are removed when writers stop
// coming, and at Close.
func TestReadySpools(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	a := openAt(t, dir, store.Options{Logger: quiet})
	madeAhead := func() {
		t.Helper()
		waitClaims(t, a)
		deadline := time.Now().Add(5 * time.Second)
		for len(tmpSpools(t, nil, dir)) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("no spool files made ahead: tmp/ = %v", tmpSpools(t, nil, dir))
			}
			time.Sleep(time.Millisecond)
		}
		// A lone writer costs two spare files at most.
		if n := len(tmpSpools(t, nil, dir)); n > 2 {
			t.Fatalf("%d spool files made ahead for one writer", n)
		}
	}
	mustStore(t, a, "starts the maker")
	madeAhead()
	b := openAt(t, dir, store.Options{Logger: quiet})
	for i := range 40 {
		c := fmt.Sprint("through a ready spool ", i)
		h, err := a.Store(bg, []byte(c))
		if err != nil {
			t.Fatalf("Store %d after another Open: %v", i, err)
		}
		if got, err := b.Get(bg, h); err != nil || string(got) != c {
			t.Fatalf("Get = %q, %v", got, err)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); len(tmpSpools(t, nil, dir)) > 0; {
		if time.Now().After(deadline) {
			t.Fatalf("tmp/ = %v 5 s after the last store", tmpSpools(t, nil, dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	mustStore(t, a, "makes spools ahead again")
	madeAhead()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if left := tmpSpools(t, nil, dir); len(left) != 0 {
		t.Fatalf("tmp/ = %v after Close", left)
	}
}
