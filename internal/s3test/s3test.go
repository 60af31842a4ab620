// Package s3test runs versitygw, an S3 server (Apache-2.0), on loopback for
// tests and benchmarks: built once from the pinned tools module in
// tools/versitygw, serving a temp directory.
//
// With $S3TEST_ENDPOINT set (and $S3TEST_ACCESS_KEY, $S3TEST_SECRET_KEY),
// the tests run against that service instead, such as the Ceph RGW of
// contrib/ceph-rgw; their buckets get a suffix of their own per run.
package s3test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Credentials of the test server.
const (
	AccessKey = "theater-test"
	SecretKey = "theater-test-secret"
)

// Server is a running versitygw, or the service $S3TEST_ENDPOINT names.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	Root      string // versitygw's directory, buckets its subdirectories; "" for another service
	AccessKey string
	SecretKey string
	suffix    string // added to bucket names on a service that outlives the run
}

var (
	starts    atomic.Int64 // of servers elsewhere, for bucket names
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// toolsDir is tools/versitygw in this repository.
func toolsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "tools", "versitygw")
}

// Binary returns the path of versitygw: $VERSITYGW if set, else built from
// the tools module into the user's cache, keyed by its go.sum, so that it
// is built once per machine and version.
func Binary() (string, error) {
	buildOnce.Do(func() {
		if p := os.Getenv("VERSITYGW"); p != "" {
			binPath = p
			return
		}
		dir := toolsDir()
		sum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
		if err != nil {
			buildErr = fmt.Errorf("versitygw tools module: %w", err)
			return
		}
		key := sha256.Sum256(sum)
		cache, err := os.UserCacheDir()
		if err != nil {
			cache = os.TempDir()
		}
		binPath = filepath.Join(cache, "theater-storefs", "versitygw-"+hex.EncodeToString(key[:8]))
		if _, err := os.Stat(binPath); err == nil {
			return
		}
		tmp := binPath + fmt.Sprint(".", os.Getpid())
		cmd := exec.Command("go", "build", "-o", tmp, "github.com/versity/versitygw/cmd/versitygw")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("building versitygw: %v\n%s", err, out)
			return
		}
		buildErr = os.Rename(tmp, binPath)
	})
	return binPath, buildErr
}

// Start runs versitygw for the test, serving a temp directory, and stops
// it in the test's cleanup. It sets the AWS credential variables for the
// process, so the test may not be parallel.
func Start(t testing.TB) *Server {
	t.Helper()
	if ep := os.Getenv("S3TEST_ENDPOINT"); ep != "" {
		// Buckets of their own for each Start, as a fresh versitygw's are.
		srv := &Server{Endpoint: ep, AccessKey: os.Getenv("S3TEST_ACCESS_KEY"), SecretKey: os.Getenv("S3TEST_SECRET_KEY"),
			suffix: fmt.Sprintf("-%d-%d-%d", time.Now().Unix(), os.Getpid(), starts.Add(1))}
		srv.setenv(t)
		return srv
	}
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	addr := freePort(t)
	cmd := exec.Command(bin, "--port", addr, "posix", root)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+AccessKey, "ROOT_SECRET_KEY="+SecretKey)
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting versitygw: %v", err)
	}
	srv := &Server{Endpoint: "http://" + addr, Root: root, AccessKey: AccessKey, SecretKey: SecretKey}
	srv.setenv(t)
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s within 20 s: %s", addr, log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return srv
}

// setenv gives the process (and the commands it runs) the credentials.
func (s *Server) setenv(t testing.TB) {
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
}

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Client returns an S3 client of the server, for what the store does not
// do (make buckets, write raw objects).
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Bucket makes a bucket and returns the store URL of prefix in it.
func (s *Server) Bucket(t testing.TB, name, prefix string) string {
	t.Helper()
	_, err := s.Client().CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(s.BucketName(name))})
	if err != nil {
		t.Fatalf("creating bucket %s: %v", name, err)
	}
	return s.URL(name, prefix)
}

// BucketName is the name a test's bucket has on the service.
func (s *Server) BucketName(name string) string { return name + s.suffix }

// URL is the --store value of prefix in bucket.
func (s *Server) URL(bucket, prefix string) string {
	u := "s3://" + s.BucketName(bucket)
	if prefix != "" {
		u += "/" + prefix
	}
	return u + "?endpoint=" + s.Endpoint
}
