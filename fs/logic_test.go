package fs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// Node logic that needs no mount: naming, inode numbers, errno mapping and
// extended attribute replies.

const (
	actorA = "0f0e0d0c-0b0a-4908-8706-050403020100"
	actorB = "ffffffff-ffff-4fff-bfff-ffffffffffff"
)

func TestActorOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		label  string
		wantID string
		wantOK bool
	}{
		{actorA + ":chain-head", actorA, true},
		{actorA + ":state", actorA, true},
		{actorA + ":a:b", actorA, true},
		{actorA + ":x/y", actorA, true}, // nesting is the caller's concern
		{"actor:" + actorA, actorA, true},
		{"actor:" + actorB, actorB, true},

		{actorA, "", false},                                      // no name
		{actorA + ":", "", false},                                // empty name
		{strings.ToUpper(actorA) + ":state", "", false},          // ids are lowercase
		{"actor:" + strings.ToUpper(actorA), "", false},          // ids are lowercase
		{"actor:" + actorA + ":x", "", false},                    // not "actor:<id>"
		{"actor:", "", false},                                    // no id
		{"actor:not-a-uuid", "", false},                          // not a uuid
		{"0f0e0d0c0b0a49088706050403020100:state", "", false},    // uuid without dashes
		{"0f0e0d0c-0b0a-4908-8706-05040302010:state", "", false}, // one digit short
		{"ns/" + actorA + ":state", "", false},                   // nested
		{"x" + actorA + ":state", "", false},                     // prefix before the id
		{"release: v1 final", "", false},
		{"shared:config", "", false},
		{"", "", false},
	}
	for _, tt := range tests {
		id, ok := actorOf(tt.label)
		if id != tt.wantID || ok != tt.wantOK {
			t.Errorf("actorOf(%q) = %q, %v; want %q, %v", tt.label, id, ok, tt.wantID, tt.wantOK)
		}
	}
}

func TestActorFiles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		id     string
		labels []string
		want   map[string]string
	}{
		{
			name: "chain head, state and actor label",
			id:   actorA,
			labels: []string{
				actorA + ":chain-head", actorA + ":state", "actor:" + actorA,
				actorB + ":chain-head", "actor:" + actorB, "notes", "shared:config",
			},
			want: map[string]string{
				"chain-head": actorA + ":chain-head",
				"state":      actorA + ":state",
				"actor":      "actor:" + actorA,
			},
		},
		{
			name:   "<id>:actor wins over actor:<id>",
			id:     actorA,
			labels: []string{"actor:" + actorA, actorA + ":actor"},
			want:   map[string]string{"actor": actorA + ":actor"},
		},
		{
			name:   "<id>:actor wins in either order",
			id:     actorA,
			labels: []string{actorA + ":actor", "actor:" + actorA},
			want:   map[string]string{"actor": actorA + ":actor"},
		},
		{
			name:   "only actor:<id>",
			id:     actorB,
			labels: []string{"actor:" + actorB},
			want:   map[string]string{"actor": "actor:" + actorB},
		},
		{
			name:   "empty name skipped, colons kept",
			id:     actorA,
			labels: []string{actorA + ":", actorA + ":a:b"},
			want:   map[string]string{"a:b": actorA + ":a:b"},
		},
		{
			name:   "another actor's labels only",
			id:     actorA,
			labels: []string{actorB + ":state", "actor:" + actorB},
			want:   map[string]string{},
		},
		{
			name:   "no labels",
			id:     actorA,
			labels: nil,
			want:   map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := actorFiles(tt.id, tt.labels)
			if !maps.Equal(got, tt.want) {
				t.Errorf("actorFiles(%s, %q) = %v, want %v", tt.id, tt.labels, got, tt.want)
			}
		})
	}
}

func TestJoinLabel(t *testing.T) {
	t.Parallel()
	tests := []struct{ ns, name, want string }{
		{"", "x", "x"},
		{"", "a:b c", "a:b c"},
		{"team", "x", "team/x"},
		{"team/alpha", "notes", "team/alpha/notes"},
	}
	for _, tt := range tests {
		if got := joinLabel(tt.ns, tt.name); got != tt.want {
			t.Errorf("joinLabel(%q, %q) = %q, want %q", tt.ns, tt.name, got, tt.want)
		}
	}
}

// hashWith returns a hash whose bytes are all b, with the first eight set
// from first (big-endian), to steer blobIno's input.
func hashWith(first uint64, b byte) store.Hash {
	var h store.Hash
	for i := range h {
		h[i] = b
	}
	for i := 0; i < 8; i++ {
		h[i] = byte(first >> (56 - 8*i))
	}
	return h
}

func TestInodeNumbers(t *testing.T) {
	t.Parallel()
	reserved := func(ino uint64) bool {
		return ino == 0 || ino == 1 || ino == ^uint64(0) ||
			ino == inoByHash || ino == inoByLabel || ino == inoActors
	}
	// Hashes steered at the edges of blobIno's arithmetic, then real ones.
	edges := []store.Hash{
		{}, // all zero
		hashWith(^uint64(0), 0xff),
		hashWith(1, 0),
		hashWith(0x8000000000000000, 0),
		hashWith(0x4000000000000000, 0),
		hashWith(0xc000000000000001, 0),
		hashWith(0x7fffffffffffffff, 0x7f),
	}
	var realHashes []store.Hash
	for i := range 1000 {
		realHashes = append(realHashes, shaStr(fmt.Sprint("blob ", i)))
	}
	blobInos := map[uint64]store.Hash{}
	for _, h := range append(edges, realHashes...) {
		ino := blobIno(h)
		if reserved(ino) {
			t.Errorf("blobIno(%s) = %#x, a reserved number", h, ino)
		}
		if blobIno(h) != ino {
			t.Errorf("blobIno(%s) is not stable", h)
		}
		blobInos[ino] = h
	}
	// Distinct real hashes practically never share the 61 bits blobIno
	// keeps of them.
	realInos := map[uint64]bool{}
	for _, h := range realHashes {
		realInos[blobIno(h)] = true
	}
	if len(realInos) != len(realHashes) {
		t.Errorf("%d hashes gave %d distinct inode numbers", len(realHashes), len(realInos))
	}

	names := []struct{ kind, name string }{
		{"actor", actorA}, {"actor", actorB}, {"chain", actorA}, {"chain", actorB},
		{"label", actorA + ":chain-head"}, {"label", "actor:" + actorA},
		{"label", ""}, {"", ""}, {"label", "x"}, {"labelx", ""}, {"label\x00x", ""},
	}
	nameInos := map[uint64]string{}
	for _, n := range names {
		ino := nameIno(n.kind, n.name)
		if reserved(ino) {
			t.Errorf("nameIno(%q, %q) = %#x, a reserved number", n.kind, n.name, ino)
		}
		if nameIno(n.kind, n.name) != ino {
			t.Errorf("nameIno(%q, %q) is not stable", n.kind, n.name)
		}
		if _, clash := blobInos[ino]; clash {
			t.Errorf("nameIno(%q, %q) = %#x is also a blob's inode number", n.kind, n.name, ino)
		}
		key := n.kind + "\x00" + n.name
		if other, dup := nameInos[ino]; dup && other != key {
			t.Errorf("nameIno(%q, %q) = %#x, the same as for %q", n.kind, n.name, ino, other)
		}
		nameInos[ino] = key
	}
	// The two spaces are told apart by bits, not by luck: every blob
	// number has the top bit set and the next one clear, every name
	// number both set.
	for ino := range blobInos {
		if ino&inoDerived == 0 || ino&inoLabel != 0 {
			t.Errorf("blob inode number %#x is outside the blob space", ino)
		}
	}
	for ino := range nameInos {
		if ino&inoDerived == 0 || ino&inoLabel == 0 {
			t.Errorf("name inode number %#x is outside the name space", ino)
		}
	}

	// Known values: inode numbers must stay the same across versions,
	// or a remount changes every number that tools like rsync and find
	// remembered.
	if got, want := blobIno(shaStr("hello")), uint64(0xaaf4c61ddcc5e8a2); got != want {
		t.Errorf("blobIno(sha1(hello)) = %#x, want %#x", got, want)
	}
}

func TestErrno(t *testing.T) {
	t.Parallel()
	wrap := func(err error) error { return &store.Error{Op: "label", Name: "x", Err: err} }
	wrap2 := func(err error) error { return fmt.Errorf("commit label: %w", wrap(fmt.Errorf("detail: %w", err))) }
	tests := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"nil", nil, 0},
		{"ErrNotFound", store.ErrNotFound, syscall.ENOENT},
		{"ErrInvalidHash", store.ErrInvalidHash, syscall.ENOENT},
		{"ErrCorrupt", store.ErrCorrupt, syscall.EIO},
		{"ErrCollision", store.ErrCollision, syscall.EIO},
		{"ErrInvalidLabel", store.ErrInvalidLabel, syscall.EINVAL},
		{"ErrAmbiguous", store.ErrAmbiguous, syscall.EIO},
		{"ErrExists", store.ErrExists, syscall.EEXIST},
		{"ErrIsNamespace", store.ErrIsNamespace, syscall.EISDIR},
		{"ErrNotNamespace", store.ErrNotNamespace, syscall.ENOTDIR},
		{"ErrNotEmpty", store.ErrNotEmpty, syscall.ENOTEMPTY},
		{"ErrClosed", store.ErrClosed, syscall.ESHUTDOWN},
		{"context.Canceled", context.Canceled, syscall.EINTR},
		{"raw errno", syscall.ENOSPC, syscall.ENOSPC},
		{"fs.ErrPermission", fs.ErrPermission, syscall.EACCES},
		{"fs.ErrNotExist", fs.ErrNotExist, syscall.ENOENT},
		{"unknown", errors.New("something unforeseen"), syscall.EIO},
	}
	for _, tt := range tests {
		errs := []error{tt.err}
		if tt.err != nil {
			errs = append(errs, wrap(tt.err), wrap2(tt.err))
		}
		for i, err := range errs {
			log, lb := newLogger(false)
			if got := errno(log, "test", err); got != tt.want {
				t.Errorf("%s (wrapped %d times): errno(%v) = %v, want %v", tt.name, i, err, got, tt.want)
			}
			if tt.name == "unknown" && !strings.Contains(lb.String(), "BUG") {
				t.Errorf("errno(%v) logged %q, want a BUG line", err, lb.String())
			}
		}
	}

	// What the store and the operating system really return.
	pathErr := &os.PathError{Op: "write", Path: "/store/tmp/spool-1", Err: syscall.ENOSPC}
	cases := []struct {
		name string
		err  error
		want syscall.Errno
	}{
		{"ENOSPC from a spool write", &store.Error{Op: "store", Err: fmt.Errorf("spooling: %w", pathErr)}, syscall.ENOSPC},
		{"EDQUOT", fmt.Errorf("x: %w", &os.PathError{Op: "write", Path: "p", Err: syscall.EDQUOT}), syscall.EDQUOT},
		{"EACCES from the OS", &os.PathError{Op: "open", Path: "p", Err: syscall.EACCES}, syscall.EACCES},
		{"EPERM stays EPERM", &os.PathError{Op: "open", Path: "p", Err: syscall.EPERM}, syscall.EPERM},
		{"canceled beats not found", fmt.Errorf("%w: %w", context.Canceled, store.ErrNotFound), syscall.EINTR},
		{"canceled while waiting for the owner", wrap(context.Canceled), syscall.EINTR},
		{"not found beats an errno", wrap(fmt.Errorf("%w: %w", store.ErrNotFound, syscall.EIO)), syscall.ENOENT},
		{"corrupt beats an errno", wrap(fmt.Errorf("%w: %w", store.ErrCorrupt, syscall.ENOENT)), syscall.EIO},
	}
	for _, tt := range cases {
		log, _ := newLogger(false)
		if got := errno(log, "test", tt.err); got != tt.want {
			t.Errorf("%s: errno(%v) = %v, want %v", tt.name, tt.err, got, tt.want)
		}
	}
}

func TestXattrReply(t *testing.T) {
	t.Parallel()
	val := []byte("0123456789")
	tests := []struct {
		name     string
		dest     int
		wantN    uint32
		wantErr  syscall.Errno
		wantCopy bool
	}{
		{"size probe", 0, 10, 0, false},
		{"one short", 9, 10, syscall.ERANGE, false},
		{"one byte", 1, 10, syscall.ERANGE, false},
		{"exact", 10, 10, 0, true},
		{"larger", 64, 10, 0, true},
	}
	for _, tt := range tests {
		dest := make([]byte, tt.dest)
		n, en := xattrReply(val, dest)
		if n != tt.wantN || en != tt.wantErr {
			t.Errorf("%s: xattrReply(%d-byte value, %d-byte dest) = %d, %v; want %d, %v", tt.name, len(val), tt.dest, n, en, tt.wantN, tt.wantErr)
		}
		if tt.wantCopy && string(dest[:n]) != string(val) {
			t.Errorf("%s: copied %q, want %q", tt.name, dest[:n], val)
		}
		if !tt.wantCopy && strings.Trim(string(dest), "\x00") != "" {
			t.Errorf("%s: wrote %q into a buffer it refused", tt.name, dest)
		}
	}
	if n, en := xattrReply(nil, nil); n != 0 || en != 0 {
		t.Errorf("xattrReply(empty, nil) = %d, %v; want 0, 0", n, en)
	}
	if n, en := xattrReply(nil, make([]byte, 4)); n != 0 || en != 0 {
		t.Errorf("xattrReply(empty, 4 bytes) = %d, %v; want 0, 0", n, en)
	}

	if got, want := string(xattrNames(xattrHash, xattrRefs)), "user.theater.hash\x00user.theater.refs\x00"; got != want {
		t.Errorf("xattrNames = %q, want %q", got, want)
	}
	h1, h2 := shaStr("a"), shaStr("b")
	if got, want := string(refsValue([]store.Hash{h1, h2})), h1.String()+"\n"+h2.String()+"\n"; got != want {
		t.Errorf("refsValue = %q, want %q", got, want)
	}
}

func TestChainEntryName(t *testing.T) {
	t.Parallel()
	h := shaStr("event")
	tests := []struct {
		seq  int
		want string
	}{
		{1, "000001-" + h.String()},
		{42, "000042-" + h.String()},
		{999999, "999999-" + h.String()},
		{1000000, "1000000-" + h.String()}, // wider, never cut
	}
	for _, tt := range tests {
		if got := chainEntryName(tt.seq, h); got != tt.want {
			t.Errorf("chainEntryName(%d) = %q, want %q", tt.seq, got, tt.want)
		}
	}
	// Names sort in chain order up to the padding's width.
	if a, b := chainEntryName(9, h), chainEntryName(10, h); a >= b {
		t.Errorf("%q sorts after %q", a, b)
	}
}

// TestStaleAgain: a label open that got ESTALE is retried by the kernel at
// once; staleAgain knows the retry by its process and the moment, and
// nothing else.
func TestStaleAgain(t *testing.T) {
	f := &fsys{}
	ctx := func(pid uint32) context.Context {
		return &fuse.Context{Caller: fuse.Caller{Pid: pid}, Cancel: nil}
	}
	// Thread ids that are no process's own are taken as the process.
	const a, b = 1 << 30, 1<<30 + 1
	if f.staleAgain(ctx(a)) {
		t.Fatal("a first ESTALE taken for a retry")
	}
	if f.staleAgain(ctx(b)) {
		t.Fatal("another process's first ESTALE taken for a retry")
	}
	if !f.staleAgain(ctx(a)) {
		t.Fatal("the retry right after an ESTALE not recognized")
	}
	if f.staleAgain(ctx(a)) {
		t.Fatal("a retry recognized twice")
	}
	time.Sleep(staleRetryWindow + 10*time.Millisecond)
	if f.staleAgain(ctx(b)) {
		t.Fatal("an open long after an ESTALE taken for its retry")
	}
}

// countingStore counts the events VisitChain reads.
type countingStore struct {
	*store.Store
	visited int
}

func (c *countingStore) VisitChain(ctx context.Context, head store.Hash, visit func(store.ChainLink) bool) error {
	return c.Store.VisitChain(ctx, head, func(l store.ChainLink) bool {
		c.visited++
		return visit(l)
	})
}

// TestChainWalksOnlyWhatIsNew: when the head moves on, chain/ reads only
// the new events; when it moves to another branch, the whole chain.
func TestChainWalksOnlyWhatIsNew(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	event := func(parent *store.Hash, n int) store.Hash {
		p := "null"
		if parent != nil {
			p = fmt.Sprintf("%d", parent[:])
			p = "[" + strings.Join(strings.Fields(strings.Trim(p, "[]")), ",") + "]"
		}
		h, err := st.Store(ctx, fmt.Appendf(nil, `{"parent_hash":%s,"event_type":"tick","data":[],"timestamp":%d,"description":"e%d"}`, p, n, n))
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	var chain []store.Hash
	var parent *store.Hash
	for i := range 5 {
		h := event(parent, i)
		chain = append(chain, h)
		parent = &chain[len(chain)-1]
	}
	head := store.ChainHeadLabel(actorA)
	cs := &countingStore{Store: st}
	d := &chainDir{fixedDir: fixedDir{fs: &fsys{st: cs, log: slog.Default()}}, id: actorA}
	check := func(want []store.Hash, visits int) {
		t.Helper()
		cs.visited = 0
		got, en := d.chain(ctx)
		if en != 0 || !slices.Equal(got, want) {
			t.Fatalf("chain = %v, %v; want %v", got, en, want)
		}
		if cs.visited != visits {
			t.Fatalf("chain read %d events, want %d", cs.visited, visits)
		}
	}
	st.ReplaceAtLabel(ctx, head, chain[4])
	check(chain, 5)
	check(chain, 0) // head unchanged: nothing read
	h5 := event(&chain[4], 5)
	h6 := event(&h5, 6)
	st.ReplaceAtLabel(ctx, head, h6)
	check(append(slices.Clone(chain), h5, h6), 3) // the two new, then the old head
	// Another branch, from event 2: walked whole.
	fork := event(&chain[2], 7)
	st.ReplaceAtLabel(ctx, head, fork)
	check(append(slices.Clone(chain[:3]), fork), 4)
}
