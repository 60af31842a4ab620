package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/theater-storefs/theater-storefs/internal/etcdtest"
	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/internal/theatertest"
)

// bucketWithTheaterStore puts a store written the way Theater writes one
// into a new bucket, through sync, and returns the bucket's URL.
func bucketWithTheaterStore(t *testing.T, srv *s3test.Server, name string, opts theatertest.Options) (string, *theatertest.Manifest) {
	t.Helper()
	dir, m := theaterStore(t, opts)
	url := srv.Bucket(t, name, "store")
	if r := cli(t, "sync", dir, url); r.code != 0 {
		t.Fatalf("sync into the bucket:\n%s", r)
	}
	return url, m
}

// TestBucketMount: a mount of a bucket browses and changes it as a mount
// of a directory does.
func TestBucketMount(t *testing.T) {
	requireFuse(t)
	srv := s3test.Start(t)
	url, m := bucketWithTheaterStore(t, srv, "mount", theatertest.Options{Seed: 31, Actors: 1, ChainLength: 3, PlainBlobs: 2})
	cache := t.TempDir()
	mnt := mountStore(t, url, "--cache", cache)

	if got := catFile(t, mnt, "by-label/notes"); got != "note three" {
		t.Errorf("cat by-label/notes = %q", got)
	}
	id := m.Actors[0]
	if got, want := catFile(t, mnt, "actors/"+id+"/chain-head"), string(m.Blobs[m.Chains[id][2]]); got != want {
		t.Errorf("cat chain-head = %q, want %q", got, want)
	}
	if got := lines(mustSh(t, mnt, "ls actors/"+id+"/chain")); len(got) != 3 {
		t.Errorf("ls chain/ = %q, want 3 events", got)
	}
	if got := lines(mustSh(t, mnt, "ls by-hash")); len(got) != len(m.Blobs) {
		t.Errorf("ls by-hash lists %d blobs, want %d", len(got), len(m.Blobs))
	}
	for h, content := range m.Blobs {
		if got := catFile(t, mnt, "by-hash/"+h); got != string(content) {
			t.Fatalf("cat by-hash/%s = %q", h, got)
		}
		if got := statFile(t, mnt, "%s", "by-hash/"+h); got != fmt.Sprint(len(content)) {
			t.Errorf("size of by-hash/%s = %s, want %d", h, got, len(content))
		}
	}

	// Writing, renaming, removing, namespaces.
	mustSh(t, mnt, "printf 'written through the mount' > by-label/new && mkdir by-label/ns && cp by-label/new by-label/ns/copy && mv by-label/ns/copy by-label/ns/moved")
	if r := cli(t, "--store", url, "get", "store:ns/moved"); r.stdout != "written through the mount" {
		t.Errorf("the bucket after writes through the mount:\n%s", r)
	}
	if got := mustSh(t, mnt, "ls by-label/ns"); got != "moved\n" {
		t.Errorf("ls by-label/ns = %q", got)
	}
	mustSh(t, mnt, "rm by-label/ns/moved by-label/new && rmdir by-label/ns")
	if r := cli(t, "--store", url, "labels"); strings.Contains(r.stdout, "new") || strings.Contains(r.stdout, "ns/") {
		t.Errorf("labels after rm and rmdir:\n%s", r)
	}
	shFails(t, mnt, "rmdir by-label/team", "Directory not empty")
	// A namespace cannot be renamed in a bucket: mv copies it instead.
	mustSh(t, mnt, "mv by-label/team by-label/crew")
	if got := lines(mustSh(t, mnt, "ls by-label/crew")); len(got) == 0 {
		t.Error("mv of a namespace lost its labels")
	}
	if _, err := os.Stat(filepath.Join(mnt, "by-label", "team")); !os.IsNotExist(err) {
		t.Errorf("after mv the old namespace is still there: %v", err)
	}

	// The cache holds verified copies of what was read.
	ents, _ := os.ReadDir(filepath.Join(cache, "blobs"))
	if len(ents) < len(m.Blobs) {
		t.Errorf("the cache holds %d files after reading %d blobs", len(ents), len(m.Blobs))
	}
}

// TestBucketMountCorruptBlob: a blob whose content does not hash to its
// name is refused with EIO, and nothing of it is cached.
func TestBucketMountCorruptBlob(t *testing.T) {
	requireFuse(t)
	srv := s3test.Start(t)
	url := srv.Bucket(t, "corrupt", "")
	h := sha1Hex([]byte("the real content"))
	_, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{
		Bucket: aws.String(srv.BucketName("corrupt")), Key: aws.String("data/" + h), Body: strings.NewReader("another content")})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	mnt := mountStore(t, url, "--cache", cache)
	shFails(t, mnt, "cat by-hash/"+h, "Input/output error")
	if _, err := os.Stat(filepath.Join(cache, "blobs", h)); !os.IsNotExist(err) {
		t.Errorf("a corrupt blob was cached: %v", err)
	}
}

// TestBucketMountCacheBound: the cache stays within --cache-size however
// much is read, and a second mount may not share it.
func TestBucketMountCacheBound(t *testing.T) {
	requireFuse(t)
	srv := s3test.Start(t)
	url := srv.Bucket(t, "bound", "")
	var hashes []string
	for i := range 6 {
		in := filepath.Join(t.TempDir(), "in")
		os.WriteFile(in, []byte(strings.Repeat(fmt.Sprint(i), 300<<10)), 0o644)
		r := cli(t, "--store", url, "put", in)
		if r.code != 0 {
			t.Fatalf("put:\n%s", r)
		}
		hashes = append(hashes, strings.TrimSpace(r.stdout))
	}
	cache := t.TempDir()
	mnt := mountStore(t, url, "--cache", cache, "--cache-size", "1MiB")
	for round := range 2 {
		for _, h := range hashes {
			if got := statFile(t, mnt, "%s", "by-hash/"+h); got != fmt.Sprint(300<<10) {
				t.Fatalf("round %d: size %s", round, got)
			}
			mustSh(t, mnt, "cat by-hash/"+h+" > /dev/null")
		}
	}
	var total int64
	ents, _ := os.ReadDir(filepath.Join(cache, "blobs"))
	for _, e := range ents {
		if fi, err := e.Info(); err == nil && e.Name() != ".lock" {
			total += fi.Size()
		}
	}
	if total > 1<<20 || total == 0 {
		t.Errorf("the cache holds %d bytes, want some, at most 1 MiB", total)
	}
	mnt2 := newMountpoint(t)
	r := cli(t, "--store", url, "mount", "--cache", cache, mnt2)
	if r.code == 0 {
		cleanupMount(t, mnt2)
		t.Fatal("a second mount shared the first one's cache")
	}
	if !strings.Contains(r.stderr, "in use by another process") {
		t.Errorf("a second mount on the same cache:\n%s", r)
	}
}

// TestBucketTwoMounts: a label changed on one mount of a bucket shows on
// another mount of it, in what a reader opens at once, and in what ls -l
// shows (cached by the kernel) within a poll or two.
func TestBucketTwoMounts(t *testing.T) {
	requireFuse(t)
	srv := s3test.Start(t)
	twoMounts(t, srv.Bucket(t, "shared", ""), "--poll", "200ms")
}

// TestBucketTwoMountsEtcd: the same with the labels in etcd, whose watch
// tells the other mount of a change at once.
func TestBucketTwoMountsEtcd(t *testing.T) {
	requireFuse(t)
	srv, etcd := s3test.Start(t), etcdtest.Start(t)
	url := srv.Bucket(t, "shared-etcd", "")
	labels := "etcd://" + etcd + "/shared"
	twoMounts(t, url, "--labels", labels)
	if r := cli(t, "--store", url, "--labels", labels, "labels"); r.code != 0 || r.stdout != "" {
		t.Errorf("labels after the mounts' changes:\n%s", r)
	}
	if r := cli(t, "--store", url, "labels"); r.code != 0 || r.stdout != "" {
		t.Errorf("the bucket holds labels of its own:\n%s", r)
	}
}

// twoMounts mounts url twice with the global flags (--labels) or mount
// flags given, and changes a label on one while the other looks.
func twoMounts(t *testing.T, url string, flags ...string) {
	var global, local []string
	for i := 0; i+1 < len(flags); i += 2 {
		if flags[i] == "--labels" {
			global = append(global, flags[i:i+2]...)
		} else {
			local = append(local, flags[i:i+2]...)
		}
	}
	mount := func() string {
		mnt := newMountpoint(t)
		args := append(append([]string{"--store", url}, global...), "mount", "--cache", t.TempDir())
		r := cli(t, append(append(args, local...), mnt)...)
		if r.code != 0 {
			t.Fatalf("mount:\n%s", r)
		}
		t.Cleanup(func() { cleanupMount(t, mnt) })
		return mnt
	}
	a, b := mount(), mount()
	mustSh(t, a, "printf one > by-label/shared")
	if got := catFile(t, b, "by-label/shared"); got != "one" {
		t.Fatalf("the other mount reads %q", got)
	}
	if got := statFile(t, b, "%s", "by-label/shared"); got != "3" {
		t.Fatalf("the other mount's size: %s", got)
	}
	mustSh(t, a, "printf 'three and more' > by-label/shared")
	start := time.Now()
	eventually(t, 3*time.Second, func() error {
		if got := statFile(t, b, "%s", "by-label/shared"); got != "14" {
			return fmt.Errorf("the other mount's size is still %s", got)
		}
		return nil
	})
	t.Logf("a label's new size showed on the other mount after %v", time.Since(start).Round(time.Millisecond))
	if got := catFile(t, b, "by-label/shared"); got != "three and more" {
		t.Errorf("the other mount reads %q", got)
	}
	mustSh(t, a, "rm by-label/shared")
	eventually(t, 3*time.Second, func() error {
		if r := sh(t, b, "ls by-label"); strings.Contains(r.stdout, "shared") {
			return fmt.Errorf("still listed: %q", r.stdout)
		}
		return nil
	})
}
