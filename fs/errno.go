package fs

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"syscall"

	"github.com/theater-storefs/theater-storefs/store"
)

// errno maps an error from the store to the errno a FUSE caller sees. It is
// the only place that does: store sentinels first, then cancellation, then
// whatever errno the operating system gave, and EIO (logged) for anything
// unforeseen. fs.ToErrno is never relied on: it turns unknown errors into
// ENOTSUP.
func errno(log *slog.Logger, op string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return syscall.EINTR
	case errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrInvalidHash):
		return syscall.ENOENT
	case errors.Is(err, store.ErrCorrupt):
		log.Error("integrity failure: refusing to serve", "op", op, "err", err)
		return syscall.EIO
	case errors.Is(err, store.ErrCollision):
		log.Error("refused content carrying a SHA-1 collision attack", "op", op, "err", err)
		return syscall.EIO
	case errors.Is(err, store.ErrInvalidLabel):
		return syscall.EINVAL
	case errors.Is(err, store.ErrExists):
		return syscall.EEXIST
	case errors.Is(err, store.ErrIsNamespace):
		return syscall.EISDIR
	case errors.Is(err, store.ErrNotNamespace):
		return syscall.ENOTDIR
	case errors.Is(err, store.ErrNotEmpty):
		return syscall.ENOTEMPTY
	case errors.Is(err, store.ErrAmbiguous):
		return syscall.EIO
	case errors.Is(err, store.ErrClosed):
		return syscall.ESHUTDOWN
	case errors.Is(err, store.ErrCrossDevice):
		return syscall.EXDEV // mv copies instead
	case errors.Is(err, store.ErrUnavailable):
		log.Warn("store unavailable", "op", op, "err", err)
		return syscall.EIO
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	if errors.Is(err, fs.ErrPermission) {
		return syscall.EACCES
	}
	if errors.Is(err, fs.ErrNotExist) {
		return syscall.ENOENT
	}
	log.Error("BUG: unmapped error; returning EIO", "op", op, "err", err)
	return syscall.EIO
}

func (f *fsys) errno(op string, err error) syscall.Errno { return errno(f.log, op, err) }

// refuseChange is the errno for changing what cannot change: EROFS on a
// read-only mount, EACCES otherwise.
func (f *fsys) refuseChange() syscall.Errno {
	if f.readOnly {
		return syscall.EROFS
	}
	return syscall.EACCES
}

// quick detaches an operation from the caller's interrupts. The kernel
// sends FUSE_INTERRUPT whenever the calling thread gets a signal; Go
// programs get SIGURG all the time (goroutine preemption). Failing a
// lookup with EINTR is a spurious error; failing a close would lose the
// write it commits, and failing the open of a large blob being verified
// would make a Go client (which retries EINTR) start over forever. So no
// operation is cut short by an interrupt: like a local file system's, they
// finish, and only unmounting stops them.
func quick(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }
