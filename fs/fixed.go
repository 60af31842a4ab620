package fs

import (
	"context"
	"syscall"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// fixedDir is the base of every directory whose entries come from the
// store rather than from the user: the root, by-hash/, actors/ and what is
// below it. Every change in it is refused with EACCES (EROFS on a read-only
// mount). The refusals must be explicit: go-fuse answers success for an
// Unlink or Rmdir a node does not implement, and drops the entry.
type fixedDir struct {
	fusefs.Inode
	fs *fsys
}

var _ = (fusefs.NodeGetattrer)((*fixedDir)(nil))

// Getattr: read-only, and derived from labels that change, so short-lived
// unless a kind of directory says otherwise (by-hash/).
func (d *fixedDir) Getattr(ctx context.Context, fh fusefs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	d.fs.dirAttr(&out.Attr, 0o555)
	out.SetTimeout(d.fs.labelTTL)
	return 0
}

var (
	_ = (fusefs.NodeCreater)((*fixedDir)(nil))
	_ = (fusefs.NodeMkdirer)((*fixedDir)(nil))
	_ = (fusefs.NodeMknoder)((*fixedDir)(nil))
	_ = (fusefs.NodeUnlinker)((*fixedDir)(nil))
	_ = (fusefs.NodeRmdirer)((*fixedDir)(nil))
	_ = (fusefs.NodeRenamer)((*fixedDir)(nil))
	_ = (fusefs.NodeLinker)((*fixedDir)(nil))
	_ = (fusefs.NodeSymlinker)((*fixedDir)(nil))
	_ = (fusefs.NodeSetattrer)((*fixedDir)(nil))
	_ = (fusefs.NodeSetxattrer)((*fixedDir)(nil))
	_ = (fusefs.NodeRemovexattrer)((*fixedDir)(nil))
)

func (d *fixedDir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, fusefs.FileHandle, uint32, syscall.Errno) {
	return nil, nil, 0, d.fs.refuseChange()
}

func (d *fixedDir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.fs.refuseChange()
}

func (d *fixedDir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.fs.refuseChange()
}

func (d *fixedDir) Unlink(ctx context.Context, name string) syscall.Errno {
	return d.fs.refuseChange()
}

func (d *fixedDir) Rmdir(ctx context.Context, name string) syscall.Errno {
	return d.fs.refuseChange()
}

func (d *fixedDir) Rename(ctx context.Context, name string, newParent fusefs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	return d.fs.refuseChange()
}

func (d *fixedDir) Link(ctx context.Context, target fusefs.InodeEmbedder, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.fs.refuseChange()
}

func (d *fixedDir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fusefs.Inode, syscall.Errno) {
	return nil, d.fs.refuseChange()
}

func (d *fixedDir) Setattr(ctx context.Context, fh fusefs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	return d.fs.refuseChange()
}

func (d *fixedDir) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	return d.fs.refuseChange()
}

func (d *fixedDir) Removexattr(ctx context.Context, attr string) syscall.Errno {
	return d.fs.refuseChange()
}
