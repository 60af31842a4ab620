package integration

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/theater-storefs/theater-storefs/internal/s3test"
)

// TestBucketCommands drives the commands on a bucket as a user would:
// --store s3://..., then sync to a directory and back.
func TestBucketCommands(t *testing.T) {
	srv := s3test.Start(t)
	url := srv.Bucket(t, "theater", "nodes/shared")
	ok := func(args ...string) string {
		t.Helper()
		r := cli(t, append([]string{"--store", url}, args...)...)
		if r.code != 0 {
			t.Fatalf("want success:\n%s", r)
		}
		return r.stdout
	}
	in := filepath.Join(t.TempDir(), "in")
	os.WriteFile(in, []byte("hello bucket\n"), 0o644)
	h := strings.TrimSpace(ok("put", "--label", "greet", in))
	if h != sha1Hex([]byte("hello bucket\n")) {
		t.Fatalf("put printed %q", h)
	}
	if got := ok("get", "store:greet"); got != "hello bucket\n" {
		t.Fatalf("get: %q", got)
	}
	ok("label", "team/x", h)
	if got := ok("labels"); got != "greet\nteam/x\n" {
		t.Fatalf("labels: %q", got)
	}
	if got := ok("refs", "team/x"); got != h+"\n" {
		t.Fatalf("refs: %q", got)
	}
	if got := ok("ls"); got != h+" 13\n" {
		t.Fatalf("ls: %q", got)
	}
	if r := cli(t, "--store", url, "fsck"); r.code != 0 || !strings.Contains(r.stderr, "checked 1 blobs and 2 labels: 0 problems") {
		t.Errorf("fsck of the bucket:\n%s", r)
	}
	ok("unlabel", "team/x")
	if got := ok("labels"); got != "greet\n" {
		t.Fatalf("labels after unlabel: %q", got)
	}
	// The bucket's objects are where a store directory keeps them.
	if _, err := srv.Client().HeadObject(context.Background(), &s3.HeadObjectInput{
		Bucket: aws.String(srv.BucketName("theater")), Key: aws.String("nodes/shared/data/" + h)}); err != nil {
		t.Fatal(err)
	}

	// A corrupt blob in the bucket: get fails, and writes none of it.
	bad := sha1Hex([]byte("what it should be"))
	if _, err := srv.Client().PutObject(context.Background(), &s3.PutObjectInput{Bucket: aws.String(srv.BucketName("theater")),
		Key: aws.String("nodes/shared/data/" + bad), Body: strings.NewReader("evil!!")}); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "--store", url, "get", bad); r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, "corrupt") {
		t.Errorf("get of a corrupt blob:\n%s", r)
	}
	if r := cli(t, "--store", url, "fsck"); r.code != 1 || !strings.Contains(r.stdout, "corrupt-blob "+bad) {
		t.Errorf("fsck with a corrupt blob:\n%s", r)
	}
	if _, err := srv.Client().DeleteObject(context.Background(), &s3.DeleteObjectInput{Bucket: aws.String(srv.BucketName("theater")),
		Key: aws.String("nodes/shared/data/" + bad)}); err != nil {
		t.Fatal(err)
	}

	// sync to a new directory and back to another prefix.
	dir := filepath.Join(t.TempDir(), "copy")
	if r := cli(t, "sync", url, dir); r.code != 0 || !strings.Contains(r.stderr, "copied 1 blobs") {
		t.Fatalf("sync to a directory:\n%s", r)
	}
	if r := cli(t, "--store", dir, "fsck"); r.code != 0 {
		t.Fatalf("fsck of the copy:\n%s", r)
	}
	back := srv.URL("theater", "nodes/other")
	if r := cli(t, "sync", dir, back); r.code != 0 {
		t.Fatalf("sync back:\n%s", r)
	}
	if r := cli(t, "--store", back, "get", "store:greet"); r.code != 0 || r.stdout != "hello bucket\n" {
		t.Fatalf("get from the synced prefix:\n%s", r)
	}

	// Failures are one line, with the right exit code.
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--store", url, "gc"}, 2, "not on a bucket"},
		{[]string{"--store", url, "mount", "--cache-size", "0", t.TempDir()}, 2, "--cache-size"},
		{[]string{"--store", url, "mount", "--poll", "1ms", t.TempDir()}, 2, "--poll 1ms is too short"},
		{[]string{"--store", dir, "mount", "--cache", t.TempDir(), t.TempDir()}, 2, "--cache is for a bucket"},
		{[]string{"--store", srv.URL("missing", ""), "labels"}, 1, "the bucket does not exist"},
		{[]string{"--store", "s3://theater?endpont=x", "labels"}, 2, "unknown parameter endpont"},
		{[]string{"--store", "S3://theater", "labels"}, 2, "a bucket is s3://"},
		{[]string{"--store", "S3://theater", "mount", t.TempDir()}, 2, "a bucket is s3://"},
		{[]string{"--store", url, "get", "store:nobody"}, 1, "not found"},
	} {
		r := cli(t, c.args...)
		if r.code != c.code || !strings.Contains(r.stderr, c.want) || strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("want exit %d and one line with %q:\n%s", c.code, c.want, r)
		}
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true") // no waiting on a metadata service
	if r := cli(t, "--store", url, "labels"); r.code != 1 || !strings.Contains(r.stderr, "no AWS credentials") {
		t.Errorf("without credentials:\n%s", r)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", s3test.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if r := cli(t, "--store", url, "labels"); r.code != 1 || !strings.Contains(r.stderr, "SignatureDoesNotMatch") {
		t.Errorf("with a wrong secret:\n%s", r)
	}
}
