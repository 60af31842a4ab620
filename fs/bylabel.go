package fs

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"time"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/theater-storefs/theater-storefs/store"
)

const byLabel = "by-label"

// labelName returns the label (or namespace) a node under by-label/ stands
// for, from where it is in the tree now: renames move nodes, and the name
// follows. ok is false for a node that is no longer in by-label/ (removed).
// The top of by-label/ itself is "".
func labelName(n *fusefs.Inode) (name string, ok bool) {
	p := n.Path(nil)
	if p == byLabel {
		return "", true
	}
	name, ok = strings.CutPrefix(p, byLabel+"/")
	return name, ok && name != ""
}

func joinLabel(ns, name string) string {
	if ns == "" {
		return name
	}
	return ns + "/" + name
}

// labelDir is by-label/ or a namespace in it: labels are files, nested
// namespaces directories.
type labelDir struct {
	fusefs.Inode
	fs *fsys
}

// child returns the label name of an entry of this directory.
func (d *labelDir) child(name string) (string, syscall.Errno) {
	ns, ok := labelName(&d.Inode)
	if !ok {
		return "", syscall.ENOENT
	}
	full := joinLabel(ns, name)
	if len(name) > store.MaxComponentLen || len(full) > store.MaxLabelLen {
		return "", syscall.ENAMETOOLONG
	}
	if err := store.ValidateLabel(full); err != nil {
		return "", syscall.EINVAL
	}
	return full, 0
}

var (
	_ = (fusefs.NodeSetxattrer)((*labelDir)(nil))
	_ = (fusefs.NodeRemovexattrer)((*labelDir)(nil))
)

func (d *labelDir) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return d.fs.noXattrs()
}

func (d *labelDir) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return d.fs.noXattrs()
}

var _ = (fusefs.NodeLookuper)((*labelDir)(nil))

func (d *labelDir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	full, en := d.child(name)
	if en != 0 {
		return nil, syscall.ENOENT
	}
	li, err := d.fs.st.StatLabel(ctx, full)
	if errors.Is(err, store.ErrIsNamespace) {
		d.fs.dirAttr(&out.Attr, 0o755)
		setTimeouts(out, d.fs.labelTTL)
		// The same node again, if there is one: its children include
		// labels being created, which the store does not know yet.
		if ch := d.GetChild(name); ch != nil {
			if _, ok := ch.Operations().(*labelDir); ok {
				return ch, 0
			}
		}
		return d.NewInode(ctx, &labelDir{fs: d.fs}, fusefs.StableAttr{Mode: syscall.S_IFDIR}), 0
	}
	if errors.Is(err, store.ErrNotFound) {
		// A label being created, not closed yet, is there for its
		// writers, with nothing committed.
		if ch := d.GetChild(name); ch != nil {
			if n, ok := ch.Operations().(*labelNode); ok {
				var pending bool
				if li, pending, err = n.statLabel(ctx, full); pending {
					d.fs.fileAttr(&out.Attr, n.perm(), 0, timeNow())
					setTimeouts(out, d.fs.labelTTL)
					return ch, 0
				}
			}
		}
	}
	if err != nil {
		return nil, d.fs.errno("lookup label", err)
	}
	// Reuse the node already in the tree: a fresh one would leave the old
	// node (still held by open files) believing, through go-fuse's
	// parent records, that it is this label, and its writers would
	// commit to a name that was since removed or renamed.
	// A writer sent away from a sealed node by ESTALE walks the path
	// again: the node it finds stays direct for a moment, whatever
	// readers open and close it meanwhile (see labelNode.openReader).
	until, writerComing := d.fs.writerExpected(full)
	if ch := d.GetChild(name); ch != nil {
		// A sealed node is a fixed version for its readers: the name
		// gets a fresh node.
		if n, ok := ch.Operations().(*labelNode); ok && n.sealedAs() == nil {
			if writerComing {
				n.keepDirect(until)
			}
			n.attrFrom(ctx, li, &out.Attr)
			setTimeouts(out, d.fs.labelTTL)
			out.SetAttrTimeout(0)
			return ch, 0
		}
	}
	n := &labelNode{fs: d.fs}
	if writerComing {
		n.directUntil = until
	}
	n.attrFrom(ctx, li, &out.Attr)
	setTimeouts(out, d.fs.labelTTL)
	out.SetAttrTimeout(0) // see labelNode.Getattr
	return d.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG}), 0
}

// directAfterSeal is how long the node a writer is sent to stays direct:
// long enough for the writer to open it.
const directAfterSeal = time.Second

var _ = (fusefs.NodeReaddirer)((*labelDir)(nil))

func (d *labelDir) Readdir(ctx context.Context) (fusefs.DirStream, syscall.Errno) {
	ctx = quick(ctx)
	ns, ok := labelName(&d.Inode)
	if !ok {
		return nil, syscall.ENOENT
	}
	ents, err := d.fs.st.ReadNamespace(ctx, ns)
	if err != nil {
		return nil, d.fs.errno("list labels", err)
	}
	out := make([]fuse.DirEntry, len(ents))
	for i, e := range ents {
		out[i] = fuse.DirEntry{Name: e.Name, Mode: syscall.S_IFREG}
		if e.IsNamespace {
			out[i].Mode = syscall.S_IFDIR
		}
	}
	return fusefs.NewListDirStream(out), 0
}

var _ = (fusefs.NodeGetattrer)((*labelDir)(nil))

func (d *labelDir) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fs.dirAttr(&out.Attr, 0o755)
	out.SetTimeout(d.fs.labelTTL)
	return 0
}

var _ = (fusefs.NodeSetattrer)((*labelDir)(nil))

// Setattr accepts and forgets mode, owner and time changes, so cp -a and
// rsync -a work; there is nowhere to keep them.
func (d *labelDir) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if d.fs.readOnly {
		return syscall.EROFS
	}
	return d.Getattr(ctx, fh, out)
}

var _ = (fusefs.NodeCreater)((*labelDir)(nil))

// Create makes a new label. It exists in the store once the file is closed
// or fsynced, holding what was written (nothing, for touch).
func (d *labelDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	ctx = quick(ctx)
	if d.fs.readOnly {
		return nil, nil, 0, syscall.EROFS
	}
	full, en := d.child(name)
	if en != 0 {
		return nil, nil, 0, en
	}
	if _, err := d.fs.st.StatLabel(ctx, full); err == nil {
		if flags&syscall.O_EXCL != 0 {
			return nil, nil, 0, syscall.EEXIST
		}
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, nil, 0, d.fs.errno("create label", err)
	}
	n := &labelNode{fs: d.fs}
	ch := d.NewInode(ctx, n, fusefs.StableAttr{Mode: syscall.S_IFREG})
	fh, en := n.openWriter(ctx, nil, true)
	if en != 0 {
		return nil, nil, 0, en
	}
	fh.append = flags&syscall.O_APPEND != 0
	d.fs.fileAttr(&out.Attr, 0o644, 0, timeNow())
	setTimeouts(out, d.fs.labelTTL)
	return ch, fh, fuse.FOPEN_DIRECT_IO, 0
}

var _ = (fusefs.NodeMkdirer)((*labelDir)(nil))

func (d *labelDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	ctx = quick(ctx)
	if d.fs.readOnly {
		return nil, syscall.EROFS
	}
	full, en := d.child(name)
	if en != 0 {
		return nil, en
	}
	if err := d.fs.st.MakeNamespace(ctx, full); err != nil {
		return nil, d.fs.errno("mkdir", err)
	}
	d.fs.dirAttr(&out.Attr, 0o755)
	setTimeouts(out, d.fs.labelTTL)
	return d.NewInode(ctx, &labelDir{fs: d.fs}, fusefs.StableAttr{Mode: syscall.S_IFDIR}), 0
}

var _ = (fusefs.NodeUnlinker)((*labelDir)(nil))

// Unlink removes a label; its blobs stay until garbage collection.
func (d *labelDir) Unlink(ctx context.Context, name string) syscall.Errno {
	ctx = quick(ctx)
	if d.fs.readOnly {
		return syscall.EROFS
	}
	full, en := d.child(name)
	if en != 0 {
		return en
	}
	var n *labelNode
	if ch := d.GetChild(name); ch != nil {
		n, _ = ch.Operations().(*labelNode)
	}
	if n == nil {
		return d.fs.errno("rm", d.fs.st.RemoveLabel(ctx, full))
	}
	n.commitMu.Lock()
	defer n.commitMu.Unlock()
	err := d.fs.st.RemoveLabel(ctx, full)
	if err == nil || errors.Is(err, store.ErrNotFound) {
		pending := n.pendingWriter() != nil
		n.forgetWriters()
		if err != nil && pending {
			err = nil // a label still being created: removed before it existed
		}
	}
	return d.fs.errno("rm", err)
}

var _ = (fusefs.NodeRmdirer)((*labelDir)(nil))

func (d *labelDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	ctx = quick(ctx)
	if d.fs.readOnly {
		return syscall.EROFS
	}
	full, en := d.child(name)
	if en != 0 {
		return en
	}
	return d.fs.errno("rmdir", d.fs.st.RemoveNamespace(ctx, full))
}

var _ = (fusefs.NodeRenamer)((*labelDir)(nil))

// Rename moves a label or namespace atomically, replacing a label at the
// target: editors and rsync write a temp name and rename it over.
func (d *labelDir) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	ctx = quick(ctx)
	if d.fs.readOnly {
		return syscall.EROFS
	}
	np, ok := newParent.(*labelDir)
	if !ok {
		// Out of by-label/ is into a directory that takes no changes.
		return d.fs.refuseChange()
	}
	from, en := d.child(name)
	if en != 0 {
		return en
	}
	to, en := np.child(newName)
	if en != 0 {
		return en
	}
	const renameNoReplace, renameExchange = 1, 2
	switch {
	case flags&renameExchange != 0:
		return syscall.EINVAL
	case flags&renameNoReplace != 0:
		if _, err := d.fs.st.StatLabel(ctx, to); !errors.Is(err, store.ErrNotFound) {
			return syscall.EEXIST
		}
	}
	return d.fs.errno("rename", d.fs.st.RenameLabel(ctx, from, to))
}

var (
	_ = (fusefs.NodeLinker)((*labelDir)(nil))
	_ = (fusefs.NodeSymlinker)((*labelDir)(nil))
	_ = (fusefs.NodeMknoder)((*labelDir)(nil))
)

// A label is content: there are no links, symlinks or device files.
func (d *labelDir) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *labelDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
func (d *labelDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}
