package fs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// actorOf returns the actor id a top-level label belongs to:
// "<actor-id>:<name>" or Theater's "actor:<actor-id>".
func actorOf(label string) (id string, ok bool) {
	if rest, found := strings.CutPrefix(label, "actor:"); found && store.IsActorID(rest) {
		return rest, true
	}
	if len(label) > 37 && label[36] == ':' && store.IsActorID(label[:36]) {
		return label[:36], true
	}
	return "", false
}

// actorFiles maps the file names of actors/<id>/ to their labels, from the
// top-level label names: "<id>:<name>" is <name>, "actor:<id>" is "actor"
// unless a label "<id>:actor" exists.
func actorFiles(id string, labels []string) map[string]string {
	files := map[string]string{}
	for _, l := range labels {
		if name, ok := strings.CutPrefix(l, id+":"); ok && name != "" {
			files[name] = l
		}
	}
	if _, taken := files["actor"]; !taken && slices.Contains(labels, "actor:"+id) {
		files["actor"] = "actor:" + id
	}
	return files
}

// topLabels lists the labels directly in labels/ (actor labels never nest).
func (f *fsys) topLabels(ctx context.Context) ([]string, error) {
	ents, err := f.st.ReadNamespace(ctx, "")
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ents))
	for _, e := range ents {
		if !e.IsNamespace {
			out = append(out, e.Name)
		}
	}
	return out, nil
}

// actorsDir is actors/: one directory per actor id found in the labels.
type actorsDir struct {
	fixedDir
}

var _ = (fusefs.NodeReaddirer)((*actorsDir)(nil))

func (d *actorsDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx = quick(ctx)
	labels, err := d.fs.topLabels(ctx)
	if err != nil {
		return nil, d.fs.errno("list actors", err)
	}
	var ids []string
	for _, l := range labels {
		if id, ok := actorOf(l); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make([]fuse.DirEntry, len(ids))
	for i, id := range ids {
		out[i] = fuse.DirEntry{Name: id, Mode: syscall.S_IFDIR, Ino: nameIno("actor", id)}
	}
	return fusefs.NewListDirStream(out), 0
}

var _ = (fusefs.NodeLookuper)((*actorsDir)(nil))

func (d *actorsDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	if !store.IsActorID(name) {
		return nil, syscall.ENOENT
	}
	labels, err := d.fs.topLabels(ctx)
	if err != nil {
		return nil, d.fs.errno("lookup actor", err)
	}
	if len(actorFiles(name, labels)) == 0 {
		return nil, syscall.ENOENT
	}
	d.fs.dirAttr(&out.Attr, 0o555)
	setTimeouts(out, d.fs.labelTTL)
	return d.NewInode(ctx, &actorDir{fixedDir: fixedDir{fs: d.fs}, id: name}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: nameIno("actor", name)}), 0
}

// actorDir is actors/<id>/: chain-head, chain/, and the actor's other
// labels, all read-only.
type actorDir struct {
	fixedDir
	id string
}

const chainDirName = "chain"

var _ = (fusefs.NodeReaddirer)((*actorDir)(nil))

func (d *actorDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx = quick(ctx)
	labels, err := d.fs.topLabels(ctx)
	if err != nil {
		return nil, d.fs.errno("list actor", err)
	}
	files := actorFiles(d.id, labels)
	_, hasChain := files["chain-head"]
	var out []fuse.DirEntry
	for name, l := range files {
		if name == chainDirName && hasChain {
			continue // the chain wins; the label stays in by-label/
		}
		out = append(out, fuse.DirEntry{Name: name, Mode: syscall.S_IFREG, Ino: nameIno("label", l)})
	}
	if hasChain {
		out = append(out, fuse.DirEntry{Name: chainDirName, Mode: syscall.S_IFDIR, Ino: nameIno("chain", d.id)})
	}
	slices.SortFunc(out, func(a, b fuse.DirEntry) int { return strings.Compare(a.Name, b.Name) })
	return fusefs.NewListDirStream(out), 0
}

var _ = (fusefs.NodeLookuper)((*actorDir)(nil))

func (d *actorDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	// The label behind the name, asked for directly rather than found
	// in a listing of every label: <id>:<name>, and for "actor" Theater's
	// actor:<id> when there is no <id>:actor.
	// chain/ is the actor's events once it has a head, whatever label
	// <id>:chain there may be (by-label/ shows that one).
	if name == chainDirName {
		if _, herr := d.fs.st.StatLabel(ctx, store.ChainHeadLabel(d.id)); herr == nil {
			d.fs.dirAttr(&out.Attr, 0o555)
			setTimeouts(out, d.fs.labelTTL)
			return d.NewInode(ctx, &chainDir{fixedDir: fixedDir{fs: d.fs}, id: d.id}, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: nameIno("chain", d.id)}), 0
		}
	}
	label := d.id + ":" + name
	li, err := d.fs.st.StatLabel(ctx, label)
	if errors.Is(err, store.ErrNotFound) && name == "actor" {
		label = "actor:" + d.id
		li, err = d.fs.st.StatLabel(ctx, label)
	}
	if errors.Is(err, store.ErrIsNamespace) || errors.Is(err, store.ErrInvalidLabel) {
		return nil, syscall.ENOENT // actors/<id>/ shows labels, not namespaces
	}
	if err != nil {
		return nil, d.fs.errno("lookup actor file", err)
	}
	n := &labelNode{fs: d.fs, fixed: label, readOnly: true}
	n.attrFrom(ctx, li, &out.Attr)
	setTimeouts(out, d.fs.labelTTL)
	return d.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: nameIno("label", label)}), 0
}

// chainDir is actors/<id>/chain/: every event from the root to the head,
// as <seq>-<hash>.
type chainDir struct {
	fixedDir
	id string

	mu     sync.Mutex
	head   store.Hash
	events []store.Hash // root first, for head
}

// chain returns the events root first, walking again only when the head
// has moved, and then only from the new head back to the old one: events
// never change, so what lies behind the old head is the chain already
// held. (A head moved to another branch is walked whole.) A broken link
// ends the chain there, logged.
func (d *chainDir) chain(ctx context.Context) ([]store.Hash, syscall.Errno) {
	head, err := d.fs.st.StatLabel(ctx, store.ChainHeadLabel(d.id))
	if err != nil {
		return nil, d.fs.errno("chain head", err)
	}
	h, ok := head.Head()
	if !ok {
		return nil, 0
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.events != nil && d.head == h {
		return d.events, 0
	}
	var events []store.Hash // newest first, then turned around
	reached := false        // the old head, with the chain behind it held
	broken := d.fs.st.VisitChain(ctx, h, func(l store.ChainLink) bool {
		if d.events != nil && l.Hash == d.head {
			reached = true
			return false
		}
		events = append(events, l.Hash)
		return true
	})
	if broken != nil {
		d.fs.log.Warn("actor chain is broken; listing ends there", "actor", d.id, "reason", broken)
	}
	slices.Reverse(events)
	if reached {
		// A new slice: readers may hold the old one.
		events = append(slices.Clip(d.events), events...)
	}
	d.head, d.events = h, events
	return events, 0
}

func chainEntryName(seq int, h store.Hash) string { return fmt.Sprintf("%06d-%s", seq, h) }

var _ = (fusefs.NodeReaddirer)((*chainDir)(nil))

func (d *chainDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx = quick(ctx)
	events, en := d.chain(ctx)
	if en != 0 {
		return nil, en
	}
	return &chainStream{events: events}, 0
}

// chainStream lists a chain's events as <seq>-<hash>, one at a time.
type chainStream struct {
	events []store.Hash
	next   int
}

func (s *chainStream) HasNext() bool { return s.next < len(s.events) }

func (s *chainStream) Next() (fuse.DirEntry, syscall.Errno) {
	h := s.events[s.next]
	s.next++
	return fuse.DirEntry{Name: chainEntryName(s.next, h), Mode: syscall.S_IFREG, Ino: blobIno(h)}, 0
}

func (s *chainStream) Close() {}

var _ = (fusefs.NodeLookuper)((*chainDir)(nil))

func (d *chainDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	seqStr, hashStr, ok := strings.Cut(name, "-")
	if !ok || !store.IsHashName(hashStr) {
		return nil, syscall.ENOENT
	}
	events, en := d.chain(ctx)
	if en != 0 {
		return nil, en
	}
	// <seq>-<hash>: the seq says where to look.
	if seq, err := strconv.Atoi(seqStr); err == nil && seq >= 1 && seq <= len(events) {
		if h := events[seq-1]; chainEntryName(seq, h) == name {
			return d.fs.blobInode(ctx, &d.Inode, h, out)
		}
	}
	return nil, syscall.ENOENT
}
