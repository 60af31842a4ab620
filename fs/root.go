package fs

import (
	"context"
	"encoding/binary"
	"hash/fnv"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

// rootNode is the mount's top directory: by-hash, by-label and actors, and
// .theater with the file system's own files.
type rootNode struct {
	fixedDir

	byHash, byLabel, actors *fusefs.Inode

	stats *Stats // what .theater/stats shows; set before OnAdd
}

// Fixed inode numbers of the top directories. Derived numbers (below) have
// their top bit set, so they never meet these.
const (
	inoByHash  = 2
	inoByLabel = 3
	inoActors  = 4
)

var _ = (fusefs.NodeOnAdder)((*rootNode)(nil))

// OnAdd builds the fixed top level, added in name order so that readdir
// lists it sorted.
func (r *rootNode) OnAdd(ctx context.Context) {
	add := func(name string, node fusefs.InodeEmbedder, ino uint64) *fusefs.Inode {
		ch := r.NewPersistentInode(ctx, node, fusefs.StableAttr{Mode: syscall.S_IFDIR, Ino: ino})
		r.AddChild(name, ch, false)
		return ch
	}
	if r.stats == nil {
		r.stats = NewStats()
	}
	theater := add(".theater", &fixedDir{fs: r.fs}, inoTheaterDir)
	stats := r.NewPersistentInode(ctx, &statsNode{fs: r.fs, stats: r.stats}, fusefs.StableAttr{Mode: syscall.S_IFREG, Ino: inoStats})
	theater.AddChild("stats", stats, false)
	r.actors = add("actors", &actorsDir{fixedDir{fs: r.fs}}, inoActors)
	r.byHash = add("by-hash", &byHashDir{fixedDir: fixedDir{fs: r.fs}, leaves: newLeafQueue(leafLimit)}, inoByHash)
	r.byLabel = add("by-label", &labelDir{fs: r.fs}, inoByLabel)
}

var _ = (fusefs.NodeGetattrer)((*rootNode)(nil))

func (r *rootNode) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	r.fs.dirAttr(&out.Attr, 0o555)
	return 0
}

var _ = (fusefs.NodeStatfser)((*rootNode)(nil))

// Statfs reports a file system with room: df and installers ask.
func (r *rootNode) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	out.Bsize = 4096
	out.Frsize = 4096
	out.NameLen = store.MaxComponentLen
	return 0
}

// dirAttr fills the attributes every directory shares.
func (f *fsys) dirAttr(a *fuse.Attr, perm uint32) {
	if f.readOnly {
		perm &^= 0o222
	}
	a.Mode = syscall.S_IFDIR | perm
	a.Nlink = 2
	a.Uid, a.Gid = f.uid, f.gid
	a.SetTimes(nil, &f.started, &f.started)
}

// fileAttr fills a regular file's attributes.
func (f *fsys) fileAttr(a *fuse.Attr, perm uint32, size int64, mtime time.Time) {
	if f.readOnly {
		perm &^= 0o222
	}
	a.Mode = syscall.S_IFREG | perm
	a.Nlink = 1
	a.Size = uint64(size)
	a.Blocks = (uint64(size) + 511) / 512
	a.Blksize = 1 << 20 // cp and friends write in pieces this size: fewer round trips
	a.Uid, a.Gid = f.uid, f.gid
	a.SetTimes(nil, &mtime, &mtime)
}

// Derived inode numbers: stable across mounts, never 0, 1 or ^0, and a
// blob's never equal to a label's.
const (
	inoDerived = 1 << 63
	inoLabel   = 1 << 62
)

func blobIno(h store.Hash) uint64 {
	return (binary.BigEndian.Uint64(h[:8])&^(inoDerived|inoLabel) | inoDerived) &^ 1
}

func nameIno(kind, name string) uint64 {
	hs := fnv.New64a()
	hs.Write([]byte(kind))
	hs.Write([]byte{0})
	hs.Write([]byte(name))
	return (hs.Sum64() | inoDerived | inoLabel) &^ 1
}

func setTimeouts(out *fuse.EntryOut, d time.Duration) {
	out.SetEntryTimeout(d)
	out.SetAttrTimeout(d)
}
