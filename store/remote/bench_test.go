package remote_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
)

// BenchmarkBackends puts and gets 4 KiB and 64 MiB blobs through the local
// backend and through the S3 backend on versitygw (loopback, serving a
// directory on the same disk), side by side: what a bucket costs. Puts are
// streamed as the CLI's put streams, each of new content; gets read a blob
// through, verified.
func BenchmarkBackends(b *testing.B) {
	srv := s3test.Start(b)
	backends := []struct {
		name string
		open func(b *testing.B) store.Backend
	}{
		{"local", func(b *testing.B) store.Backend {
			s, err := store.Open(b.TempDir(), store.Options{})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
		{"versitygw", func(b *testing.B) store.Backend {
			name := fmt.Sprintf("bench-%d", buckets.Add(1))
			loc, _ := remote.ParseURL(srv.Bucket(b, name, ""))
			s, err := remote.Open(ctx, loc, remote.Options{SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}},
	}
	for _, size := range []int{4 << 10, 64 << 20} {
		content := make([]byte, size)
		for i := range content {
			content[i] = byte(i*31 + i>>9)
		}
		label := "4KiB"
		if size > 4<<10 {
			label = "64MiB"
		}
		for _, be := range backends {
			b.Run(be.name+"/put-"+label, func(b *testing.B) {
				s := be.open(b)
				defer s.Close()
				b.SetBytes(int64(size))
				n := uint64(0)
				for b.Loop() {
					n++
					binary.LittleEndian.PutUint64(content, n) // new content each time
					if _, _, err := s.PutLabeled(ctx, bytes.NewReader(content), "", store.LabelNone); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "puts/s")
			})
			b.Run(be.name+"/get-"+label, func(b *testing.B) {
				s := be.open(b)
				defer s.Close()
				var hashes []store.Hash
				for i := range 8 {
					binary.LittleEndian.PutUint64(content, uint64(1e9+i))
					h, _, err := s.PutLabeled(ctx, bytes.NewReader(content), "", store.LabelNone)
					if err != nil {
						b.Fatal(err)
					}
					hashes = append(hashes, h)
				}
				b.SetBytes(int64(size))
				i := 0
				for b.Loop() {
					r, _, err := s.OpenBlob(ctx, hashes[i%len(hashes)])
					if err != nil {
						b.Fatal(err)
					}
					if n, err := io.Copy(io.Discard, r); err != nil || n != int64(size) {
						b.Fatalf("read %d of %d: %v", n, size, err)
					}
					r.Close()
					i++
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "gets/s")
			})
		}
	}
}
