package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"
)

// putBlob writes a blob into the store the way another process would:
// straight into data/, named by its SHA-1.
func putBlob(t *testing.T, store string, content []byte) string {
	t.Helper()
	h := sha1Hex(content)
	if err := os.WriteFile(filepath.Join(store, "data", h), content, 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

// setLabelOutside points a label at a hash from outside the mount: in place
// (Theater's own way) or by an atomic rename over the label file (the
// CLI's and another mount's).
func setLabelOutside(t *testing.T, store, label, hash string, atomic bool) {
	t.Helper()
	p := filepath.Join(store, "labels", label)
	if !atomic {
		if err := os.WriteFile(p, []byte(hash), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	tmp := filepath.Join(store, "tmp", "label-outside-"+label)
	if err := os.WriteFile(tmp, []byte(hash), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// TestLiveViewLatency measures, for 100 changes made beside the mount, the
// time from the change to the mount showing it: new content in cat, the
// new size in stat, a new label in ls. The bound is 1 s, worst case.
func TestLiveViewLatency(t *testing.T) {
	requireFuse(t)
	store := emptyStore(t)
	mnt := mountStore(t, store)
	label := filepath.Join(mnt, "by-label", "live")

	// A reader holds the label in the kernel's caches from the start.
	setLabelOutside(t, store, "live", putBlob(t, store, []byte("v0")), true)
	if b, err := os.ReadFile(label); err != nil || string(b) != "v0" {
		t.Fatalf("first read: %q, %v", b, err)
	}

	var lat []time.Duration
	for i := 1; i <= 100; i++ {
		// Each version has a different length, so a stale size shows too.
		content := []byte("version " + strconv.Itoa(i) + " " + string(make([]byte, i%7)))
		h := putBlob(t, store, content)
		start := time.Now()
		setLabelOutside(t, store, "live", h, i%2 == 0)
		for {
			fi, err1 := os.Stat(label)
			b, err2 := os.ReadFile(label)
			if err1 == nil && err2 == nil && fi.Size() == int64(len(content)) && string(b) == string(content) {
				break
			}
			if time.Since(start) > 3*time.Second {
				t.Fatalf("change %d not visible after 3s: stat %v/%v, read %q/%v", i, fi, err1, b, err2)
			}
			time.Sleep(time.Millisecond)
		}
		lat = append(lat, time.Since(start))
	}
	// A label that did not exist, in ls.
	start := time.Now()
	setLabelOutside(t, store, "born-outside", putBlob(t, store, []byte("new")), true)
	eventually(t, 3*time.Second, func() error {
		names, err := os.ReadDir(filepath.Join(mnt, "by-label"))
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(names, func(e os.DirEntry) bool { return e.Name() == "born-outside" }) {
			return fmt.Errorf("ls by-label does not show born-outside yet")
		}
		return nil
	})
	lsLat := time.Since(start)

	slices.Sort(lat)
	median, worst := lat[len(lat)/2], lat[len(lat)-1]
	t.Logf("live view over %d changes: median %v, worst %v; new label in ls after %v", len(lat), median, worst, lsLat)
	if worst >= time.Second {
		t.Errorf("worst change-to-visible time %v, want under 1s", worst)
	}
}

// TestLiveViewUnderLoad changes 50 labels about 1,000 times a second for
// two seconds from outside, then checks that the mount catches up with the
// final state within a second: the change feed coalesces, it does not
// queue without bound.
func TestLiveViewUnderLoad(t *testing.T) {
	requireFuse(t)
	store := emptyStore(t)
	mnt := mountStore(t, store)
	const labels = 50
	hashes := make([]string, 64)
	for i := range hashes {
		hashes[i] = putBlob(t, store, []byte("content "+strconv.Itoa(i)))
	}
	for l := range labels {
		setLabelOutside(t, store, "l"+strconv.Itoa(l), hashes[0], true)
	}
	final := map[string]int{}
	stop := time.Now().Add(2 * time.Second)
	n := 0
	for tick := time.NewTicker(time.Millisecond); time.Now().Before(stop); <-tick.C {
		l := "l" + strconv.Itoa(n%labels)
		v := n % len(hashes)
		setLabelOutside(t, store, l, hashes[v], n%2 == 0)
		final[l] = v
		n++
	}
	start := time.Now()
	eventually(t, 3*time.Second, func() error {
		for l, v := range final {
			b, err := os.ReadFile(filepath.Join(mnt, "by-label", l))
			if err != nil {
				return err
			}
			if want := "content " + strconv.Itoa(v); string(b) != want {
				return fmt.Errorf("%s reads %q, want %q", l, b, want)
			}
		}
		return nil
	})
	caught := time.Since(start)
	t.Logf("%d label changes in 2s from outside; the mount showed the final state of all %d labels %v after the last", n, labels, caught)
	if caught >= time.Second {
		t.Errorf("caught up after %v, want under 1s", caught)
	}
}
