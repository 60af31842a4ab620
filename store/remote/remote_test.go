package remote_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
	"github.com/theater-storefs/theater-storefs/store/storetest"
)

var ctx = context.Background()

var buckets atomic.Int64

// openIn makes a fresh bucket on srv and opens a store in it, under a
// prefix so that the prefix is exercised too.
func openIn(t *testing.T, srv *s3test.Server) (*remote.Store, string) {
	t.Helper()
	name := fmt.Sprintf("bucket-%d", buckets.Add(1))
	u := srv.Bucket(t, name, "theater/store")
	loc, err := remote.ParseURL(u)
	if err != nil {
		t.Fatal(err)
	}
	s, err := remote.Open(ctx, loc, remote.Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, name
}

func TestConformance(t *testing.T) {
	srv := s3test.Start(t)
	storetest.Run(t, func(t *testing.T) store.Backend {
		s, _ := openIn(t, srv)
		return s
	})
}

// TestConformanceTombstones runs the suite as on a service that ignores
// conditions on DELETE (Ceph RGW): labels are removed by tombstone.
func TestConformanceTombstones(t *testing.T) {
	srv := s3test.Start(t)
	storetest.Run(t, func(t *testing.T) store.Backend {
		s, _ := openIn(t, srv)
		remote.ForceTombstones(s)
		return s
	})
}

// TestTombstones: a removed label is an empty object; readers, listings,
// a copy and the next write of the label all take it for no label.
func TestTombstones(t *testing.T) {
	srv := s3test.Start(t)
	probed, _ := openIn(t, srv)
	tombs, err := remote.Tombstones(probed, ctx)
	switch {
	case err != nil:
		t.Fatal(err)
	case srv.Root != "" && tombs:
		t.Fatal("versitygw refuses a DELETE whose condition fails, yet the probe says tombstones")
	case srv.Root == "":
		t.Logf("the service at %s: tombstones %v", srv.Endpoint, tombs)
	}
	s, bucket := openIn(t, srv)
	remote.ForceTombstones(s)
	h := mustStore(t, s, "a")
	for _, name := range []string{"gone", "ns/gone"} {
		if err := s.Label(ctx, name, h); err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveLabel(ctx, name); err != nil {
			t.Fatal(err)
		}
		out, err := srv.Client().HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(srv.BucketName(bucket)), Key: aws.String("theater/store/labels/" + name)})
		if err != nil || aws.ToInt64(out.ContentLength) != 0 {
			t.Fatalf("after removing %s: %v, %v; want its tombstone", name, out, err)
		}
		if _, err := s.GetByLabel(ctx, name); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("GetByLabel of a tombstone: %v", err)
		}
		if err := s.RemoveLabel(ctx, name); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("removing a tombstone: %v", err)
		}
	}
	if names, err := s.ListLabels(ctx); len(names) != 0 || err != nil {
		t.Fatalf("ListLabels lists tombstones: %q, %v", names, err)
	}
	if ents, err := s.ReadNamespace(ctx, "ns"); len(ents) != 0 || err != nil {
		t.Fatalf("ReadNamespace of a namespace holding a tombstone: %v, %v", ents, err)
	}
	if err := s.RemoveNamespace(ctx, "ns"); err != nil {
		t.Fatalf("removing a namespace holding only a tombstone: %v", err)
	}
	// A label written again over its tombstone.
	if err := s.Label(ctx, "gone", h); err != nil {
		t.Fatal(err)
	}
	if refs, err := s.GetByLabel(ctx, "gone"); err != nil || len(refs) != 1 {
		t.Fatalf("a label written over its tombstone: %v, %v", refs, err)
	}
	local, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	s.RemoveLabel(ctx, "gone")
	if rep, err := store.Copy(ctx, s, local, store.CopyOptions{}); err != nil || rep.Labels != 0 {
		t.Fatalf("copy of a bucket holding tombstones: %+v, %v", rep, err)
	}
}

// putRaw writes an object as another tool would.
func putRaw(t *testing.T, srv *s3test.Server, bucket, key string, body []byte) {
	t.Helper()
	_, err := srv.Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(srv.BucketName(bucket)), Key: aws.String("theater/store/" + key), Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRemote(t *testing.T) {
	srv := s3test.Start(t)

	t.Run("CorruptBlob", func(t *testing.T) {
		s, bucket := openIn(t, srv)
		h, _ := store.Sum([]byte("the real content"))
		putRaw(t, srv, bucket, "data/"+h.String(), []byte("something else!!"))
		_, err := s.Get(ctx, h)
		if !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("Get of a blob that does not hash to its name: %v", err)
		}
		r, _, err := s.OpenBlob(ctx, h)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if _, err := io.ReadAll(r); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("reading it through: %v", err)
		}
		// Storing the real content over it repairs it, whether the
		// stored object has its size or not (told by its MD5 ETag).
		for _, bad := range []string{"short", "something else!"} {
			putRaw(t, srv, bucket, "data/"+h.String(), []byte(bad))
			if _, err := s.Store(ctx, []byte("the real content")); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, h); err != nil || string(got) != "the real content" {
				t.Fatalf("after repair of %q: %q, %v", bad, got, err)
			}
		}
		// Also by a large put, which looks before it uploads.
		big := bytes.Repeat([]byte("large content "), 100_000)
		hb, _ := store.Sum(big)
		wrong := bytes.Repeat([]byte("LARGE CONTENT "), 100_000)
		putRaw(t, srv, bucket, "data/"+hb.String(), wrong)
		if _, _, err := s.PutLabeled(ctx, bytes.NewReader(big), "", store.LabelNone); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, hb); err != nil || !bytes.Equal(got, big) {
			t.Fatalf("after repair of a large blob: %d bytes, %v", len(got), err)
		}
	})

	t.Run("TornLabel", func(t *testing.T) {
		s, bucket := openIn(t, srv)
		h := mustStore(t, s, "a")
		putRaw(t, srv, bucket, "labels/torn", []byte(h.String()+"\n0123abc"))
		got, err := s.GetByLabel(ctx, "torn")
		if err != nil || len(got) != 1 || got[0] != h {
			t.Fatalf("a torn last line should leave the ref before it: %v, %v", got, err)
		}
		h2 := mustStore(t, s, "b")
		if err := s.Label(ctx, "torn", h2); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("appending to a label with bad lines: %v", err)
		}
		if err := s.ReplaceAtLabel(ctx, "torn", h2); err != nil {
			t.Fatalf("replacing repairs it: %v", err)
		}
		putRaw(t, srv, bucket, "labels/junk", []byte("not a hash"))
		if _, err := s.GetByLabel(ctx, "junk"); !errors.Is(err, store.ErrCorrupt) {
			t.Fatalf("a label with no hash: %v", err)
		}
	})

	t.Run("Layout", func(t *testing.T) {
		// The bucket mirrors a store directory: versitygw's posix
		// backend shows it as one.
		if srv.Root == "" {
			t.Skip("the service's files are not on this machine")
		}
		s, bucket := openIn(t, srv)
		h, err := s.PutAtLabel(ctx, "team/x", []byte("content"))
		if err != nil {
			t.Fatal(err)
		}
		local, err := store.Open(srv.Root+"/"+bucket+"/theater/store", store.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		defer local.Close()
		if got, err := local.ResolveReference(ctx, "store:team/x"); err != nil || string(got) != "content" {
			t.Fatalf("the local store reads %q, %v", got, err)
		}
		rep, err := local.Verify(ctx, nil)
		if err != nil || len(rep.Problems) != 0 {
			t.Fatalf("fsck of the bucket's directory: %+v, %v", rep, err)
		}
		_ = h
	})

	t.Run("Drafts", func(t *testing.T) {
		s, _ := openIn(t, srv)
		for _, c := range []struct {
			name  string
			write func(d store.Draft)
			want  string
		}{
			{"in order", func(d store.Draft) { d.Write([]byte("hello ")); d.Write([]byte("world")) }, "hello world"},
			{"out of order", func(d store.Draft) { d.WriteAt([]byte("world"), 6); d.WriteAt([]byte("hello "), 0) }, "hello world"},
			{"rewritten", func(d store.Draft) { d.Write([]byte("hello there")); d.WriteAt([]byte("world"), 6) }, "hello world"},
			{"truncated", func(d store.Draft) { d.Write([]byte("hello world, and more")); d.Truncate(11) }, "hello world"},
			{"extended", func(d store.Draft) { d.Write([]byte("ab")); d.Truncate(4); d.WriteAt([]byte("c"), 4) }, "ab\x00\x00c"},
			{"read from", func(d store.Draft) { d.ReadFrom(strings.NewReader("hello world")) }, "hello world"},
		} {
			d, err := s.NewDraft()
			if err != nil {
				t.Fatal(err)
			}
			c.write(d)
			if d.Size() != int64(len(c.want)) {
				t.Errorf("%s: size %d, want %d", c.name, d.Size(), len(c.want))
			}
			buf := make([]byte, 64)
			if n, err := d.ReadAt(buf, 0); n != len(c.want) || err != io.EOF || string(buf[:n]) != c.want {
				t.Errorf("%s: ReadAt = %q, %v", c.name, buf[:n], err)
			}
			h, err := d.Commit(ctx, "drafts/"+strings.ReplaceAll(c.name, " ", "-"), store.LabelReplace)
			want, _ := store.Sum([]byte(c.want))
			if err != nil || h != want {
				t.Errorf("%s: Commit = %s, %v; want %s", c.name, h, err, want)
			}
			if got, err := s.ResolveReference(ctx, "store:drafts/"+strings.ReplaceAll(c.name, " ", "-")); err != nil || string(got) != c.want {
				t.Errorf("%s: stored %q, %v", c.name, got, err)
			}
			d.Discard() // after Commit: nothing
		}
		if ents, _ := os.ReadDir(s.Dir()); len(ents) != 0 {
			t.Errorf("drafts left %d files in the spool", len(ents))
		}
	})

	t.Run("Fsck", func(t *testing.T) {
		s, bucket := openIn(t, srv)
		good := mustStore(t, s, "good")
		h, _ := store.Sum([]byte("the real content"))
		putRaw(t, srv, bucket, "data/"+h.String(), []byte("something else!!"))
		missing, _ := store.Sum([]byte("never stored"))
		putRaw(t, srv, bucket, "labels/dangling", []byte(good.String()+"\n"+missing.String()))
		putRaw(t, srv, bucket, "labels/torn", []byte(good.String()+"\nnot a hash"))
		if err := s.Label(ctx, "fine", good); err != nil {
			t.Fatal(err)
		}
		var last int
		rep, err := s.Verify(ctx, func(done, total int) { last = done })
		if err != nil {
			t.Fatal(err)
		}
		if rep.Blobs != 2 || rep.Labels != 3 || last != 5 {
			t.Errorf("fsck checked %d blobs and %d labels, progress reached %d", rep.Blobs, rep.Labels, last)
		}
		want := map[string]string{"corrupt-blob": h.String(), "missing-blob": "dangling", "bad-label": "torn"}
		if len(rep.Problems) != len(want) {
			t.Fatalf("fsck found %v", rep.Problems)
		}
		for _, p := range rep.Problems {
			if want[p.Kind] != p.Name {
				t.Errorf("fsck found %v; want %v", p, want)
			}
		}
	})

	t.Run("NoBucket", func(t *testing.T) {
		loc, _ := remote.ParseURL(srv.URL("no-such-bucket", ""))
		_, err := remote.Open(ctx, loc, remote.Options{})
		if err == nil || !strings.Contains(err.Error(), "NoSuchBucket") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("opening a missing bucket: %v", err)
		}
	})

	t.Run("ReadOnly", func(t *testing.T) {
		_, bucket := openIn(t, srv)
		loc, _ := remote.ParseURL(srv.URL(bucket, "theater/store"))
		ro, err := remote.Open(ctx, loc, remote.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ro.Store(ctx, []byte("x")); !errors.Is(err, os.ErrPermission) {
			t.Fatalf("Store on a read-only store: %v", err)
		}
	})
}

func mustStore(t *testing.T, s store.Backend, content string) store.Hash {
	t.Helper()
	h, err := s.Store(ctx, []byte(content))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestCopy copies a local store to a bucket and back.
func TestCopy(t *testing.T) {
	srv := s3test.Start(t)
	bucket, _ := openIn(t, srv)
	storetest.RunCopy(t, storetest.OpenLocal(t), bucket, storetest.OpenLocal(t))
}
