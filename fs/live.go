package fs

import (
	"strings"

	fusefs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/theater-storefs/theater-storefs/store"
)

// follow keeps the kernel's caches true to the store while it changes
// beside the mount (the Theater runtime, the CLI, another mount): for each
// change the feed reports, the kernel is told to forget the entries and
// pages it holds for it. It runs on its own goroutine, never inside a FUSE
// handler or under a lock (go-fuse issue 334), until the feed closes.
func (r *rootNode) follow(w store.Feed) {
	for {
		select {
		case <-w.Ready():
		case <-w.Done():
			return
		}
		changes, overflow := w.Take()
		if overflow {
			r.fs.log.Info("change feed overflowed; forgetting every cached entry")
			r.forgetAll()
			continue
		}
		for _, c := range changes {
			switch c.Kind {
			case store.LabelChanged:
				r.forgetLabel(c.Name)
			case store.BlobChanged:
				r.forgetBlob(c.Name)
			}
		}
	}
}

// forgetLabel drops what the kernel holds for a label: its entry under
// by-label/ (the next lookup makes a fresh inode, with fresh pages), and
// its file under actors/<id>/.
func (r *rootNode) forgetLabel(label string) {
	parent := r.byLabel
	comps := strings.Split(label, "/")
	for _, c := range comps[:len(comps)-1] {
		if parent = parent.GetChild(c); parent == nil {
			break
		}
	}
	if parent != nil {
		last := comps[len(comps)-1]
		if ch := parent.GetChild(last); ch != nil {
			ch.NotifyContent(0, 0)
		}
		parent.NotifyEntry(last)
	}
	id, ok := actorOf(label)
	if !ok {
		return
	}
	actor := r.actors.GetChild(id)
	if actor == nil {
		return
	}
	name := strings.TrimPrefix(label, id+":")
	if strings.HasPrefix(label, "actor:") {
		name = "actor"
	}
	if ch := actor.GetChild(name); ch != nil {
		ch.NotifyContent(0, 0)
	}
	actor.NotifyEntry(name)
}

// forgetBlob drops a blob's attributes and pages: Theater writes blobs in
// place, so one seen half-written must be read again.
func (r *rootNode) forgetBlob(hash string) {
	if ch := r.byHash.GetChild(hash); ch != nil {
		ch.NotifyContent(0, 0)
	}
	r.byHash.NotifyEntry(hash)
}

// forgetAll drops every entry the kernel holds below the top directories.
func (r *rootNode) forgetAll() {
	var walk func(n *fusefs.Inode)
	walk = func(n *fusefs.Inode) {
		for name, ch := range n.Children() {
			if ch.IsDir() {
				walk(ch)
			} else {
				ch.NotifyContent(0, 0)
			}
			n.NotifyEntry(name)
		}
	}
	walk(r.byHash)
	walk(r.byLabel)
	walk(r.actors)
}
