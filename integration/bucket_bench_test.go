package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/etcdtest"
	"github.com/theater-storefs/theater-storefs/internal/s3test"
)

// BenchmarkLabelPropagation measures how long a label changed through one
// mount of a bucket takes to show, in what stat reports (the kernel's
// cached attributes), on a second mount of the same bucket: with the
// labels in the bucket, found by polling every second (the default), and
// with the labels in etcd, whose watch reports the change. Each change
// gives the label a new size; the other mount is stat'ed every
// millisecond until it shows it. A reader that opens the label reads it
// afresh and sees a change at once: this is the worst case, ls -l.
func BenchmarkLabelPropagation(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	srv := s3test.Start(b)
	etcd := etcdtest.Start(b)
	for _, c := range []struct {
		name   string
		global []string
	}{
		{"bucket-poll-1s", nil},
		{"etcd-watch", []string{"--labels", "etcd://" + etcd + "/bench"}},
	} {
		// Made once: go test runs a sub-benchmark's function more than
		// once.
		url := srv.Bucket(b, "propagation-"+c.name, "")
		a, other := benchMount(b, url, c.global), benchMount(b, url, c.global)
		pa, po := filepath.Join(a, "by-label", "l"), filepath.Join(other, "by-label", "l")
		n := 0
		b.Run(c.name, func(b *testing.B) {
			var total time.Duration
			changes := 0
			for b.Loop() {
				n++
				changes++
				content := strings.Repeat("x", 1+n%1000)
				if err := os.WriteFile(pa, []byte(content), 0o644); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				for {
					if fi, err := os.Stat(po); err == nil && fi.Size() == int64(len(content)) {
						break
					}
					if time.Since(start) > 10*time.Second {
						b.Fatalf("change %d did not show on the other mount within 10 s", n)
					}
					time.Sleep(time.Millisecond)
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(changes), "ms/change")
		})
	}
}

// benchMount mounts url with a cache of its own and unmounts it when the
// benchmark ends.
func benchMount(b *testing.B, url string, global []string) string {
	b.Helper()
	mnt := filepath.Join(b.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	args := append(append([]string{"--store", url}, global...), "mount", "--cache", b.TempDir(), mnt)
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		b.Fatalf("mount: %v: %s", err, out)
	}
	b.Cleanup(func() {
		if out, err := exec.Command(bin, "unmount", mnt).CombinedOutput(); err != nil {
			b.Errorf("unmount: %v: %s", err, out)
		}
	})
	return mnt
}
