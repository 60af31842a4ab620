package store

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ChangeKind says what changed.
type ChangeKind int

const (
	// LabelChanged: a label was created, rewritten, renamed or removed,
	// or a namespace was made or removed. Name is the label.
	LabelChanged ChangeKind = iota + 1
	// BlobChanged: a blob appeared, was rewritten or removed. Name is
	// its hash.
	BlobChanged
)

// Change is one entry of the change feed.
type Change struct {
	Kind ChangeKind
	Name string
}

// maxPending bounds what a Watcher holds between two Takes; past it, the
// changes collapse into one "everything may have changed".
const maxPending = 4096

// Watcher is a change feed over data/ and labels/: it sees every change,
// whoever makes it (this process, the CLI, another mount, the Theater
// runtime), through inotify. Changes that arrive faster than they are
// taken are coalesced: memory stays bounded however fast the store
// changes.
type Watcher struct {
	// C receives a value when changes are waiting; call Take.
	C <-chan struct{}

	c      chan struct{}
	file   *os.File // the inotify descriptor, in the runtime's poller
	log    func(msg string, args ...any)
	done   chan struct{}
	closed sync.Once

	mu       sync.Mutex
	pending  map[Change]struct{}
	overflow bool
	dirs     map[int]string // watch descriptor -> "data" or "labels/<ns>"
	root     string
}

// Watch starts a change feed. Close it when done; a Watcher holds an
// inotify instance and a goroutine.
func (s *Store) Watch() (*Watcher, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, &Error{Op: "watch", Name: s.dir, Err: err}
	}
	c := make(chan struct{}, 1)
	w := &Watcher{
		C: c, c: c,
		file:    os.NewFile(uintptr(fd), "inotify"),
		log:     s.log.Warn,
		done:    make(chan struct{}),
		pending: map[Change]struct{}{},
		dirs:    map[int]string{},
		root:    s.dir,
	}
	if err := w.add(filepath.Join(s.dir, DataDir), DataDir); err != nil {
		w.file.Close()
		return nil, &Error{Op: "watch", Name: s.dir, Err: err}
	}
	if err := w.addTree(filepath.Join(s.dir, LabelsDir), ""); err != nil {
		w.file.Close()
		return nil, &Error{Op: "watch", Name: s.dir, Err: err}
	}
	go w.loop()
	return w, nil
}

const watchMask = unix.IN_CREATE | unix.IN_CLOSE_WRITE | unix.IN_MODIFY | unix.IN_MOVED_TO |
	unix.IN_MOVED_FROM | unix.IN_DELETE | unix.IN_ATTRIB | unix.IN_DONT_FOLLOW | unix.IN_ONLYDIR

// add watches one directory; rel is "data" or "labels/<ns>".
func (w *Watcher) add(dir, rel string) error {
	wd, err := unix.InotifyAddWatch(int(w.file.Fd()), dir, watchMask)
	if err != nil {
		return err
	}
	w.mu.Lock()
	w.dirs[wd] = rel
	w.mu.Unlock()
	return nil
}

// addTree watches a label namespace and every namespace below it. Labels
// found in a namespace that appeared after the watch started are reported,
// since they may have been written before its watch was in place.
func (w *Watcher) addTree(dir, ns string) error {
	rel := LabelsDir
	if ns != "" {
		rel += "/" + ns
	}
	if err := w.add(dir, rel); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		name := path.Join(ns, e.Name())
		if e.IsDir() {
			if err := w.addTree(filepath.Join(dir, e.Name()), name); err != nil && !errors.Is(err, os.ErrNotExist) {
				w.log("cannot watch label namespace; its changes show after a timeout", "namespace", name, "err", err)
			}
		}
	}
	return nil
}

func (w *Watcher) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.file.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				w.log("change feed stopped", "err", err)
			}
			return
		}
		w.parse(buf[:n])
	}
}

func (w *Watcher) parse(b []byte) {
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		nameLen := int(ev.Len)
		end := unix.SizeofInotifyEvent + nameLen
		if end > len(b) {
			return
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		b = b[end:]
		if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
			w.mu.Lock()
			w.overflow = true
			w.mu.Unlock()
			w.signal()
			continue
		}
		w.mu.Lock()
		rel, ok := w.dirs[int(ev.Wd)]
		if ev.Mask&unix.IN_IGNORED != 0 {
			delete(w.dirs, int(ev.Wd))
		}
		w.mu.Unlock()
		if !ok || name == "" {
			continue
		}
		if rel == DataDir {
			if IsHashName(name) {
				w.note(Change{BlobChanged, name})
			}
			continue
		}
		label := strings.TrimPrefix(strings.TrimPrefix(rel, LabelsDir), "/")
		label = path.Join(label, name)
		if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&unix.IN_MOVED_FROM != 0 {
			// A namespace moved away: its watches would report
			// under the old name. The move's other half re-adds it.
			w.forgetTree(LabelsDir + "/" + label)
		}
		if ev.Mask&unix.IN_ISDIR != 0 && ev.Mask&(unix.IN_CREATE|unix.IN_MOVED_TO) != 0 {
			dir := filepath.Join(w.root, LabelsDir, filepath.FromSlash(label))
			if err := w.addTree(dir, label); err == nil {
				w.noteTree(dir, label)
			}
		}
		w.note(Change{LabelChanged, label})
	}
}

// forgetTree stops watching a namespace and everything below it.
func (w *Watcher) forgetTree(rel string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for wd, r := range w.dirs {
		if r == rel || strings.HasPrefix(r, rel+"/") {
			unix.InotifyRmWatch(int(w.file.Fd()), uint32(wd))
			delete(w.dirs, wd)
		}
	}
}

// noteTree reports every label below a namespace that just appeared.
func (w *Watcher) noteTree(dir, ns string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		name := path.Join(ns, e.Name())
		w.note(Change{LabelChanged, name})
		if e.IsDir() {
			w.noteTree(filepath.Join(dir, e.Name()), name)
		}
	}
}

func (w *Watcher) note(c Change) {
	w.mu.Lock()
	if !w.overflow {
		w.pending[c] = struct{}{}
		if len(w.pending) > maxPending {
			w.overflow = true
			clear(w.pending)
		}
	}
	w.mu.Unlock()
	w.signal()
}

func (w *Watcher) signal() {
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// Take returns the changes since the last Take. With overflow true, more
// changed than the list holds: treat everything as changed.
func (w *Watcher) Take() (changes []Change, overflow bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for c := range w.pending {
		changes = append(changes, c)
	}
	clear(w.pending)
	overflow, w.overflow = w.overflow, false
	return changes, overflow
}

// Watches is how many directories are being watched, for leak checks.
func (w *Watcher) Watches() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.dirs)
}

// Close stops the feed and releases its inotify instance.
func (w *Watcher) Close() error {
	var err error
	w.closed.Do(func() {
		err = w.file.Close()
		<-w.done
	})
	return err
}

// Done is closed when the feed has stopped.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Ready is C, for the Feed interface.
func (w *Watcher) Ready() <-chan struct{} { return w.C }
