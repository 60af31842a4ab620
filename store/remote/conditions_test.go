package remote

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"testing"

	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/storetest"
)

// TestConditions checks that the service honours the conditions the
// labels' compare-and-swap rests on. A service that ignored them would
// pass every other test run one writer at a time.
func TestConditions(t *testing.T) {
	srv := s3test.Start(t)
	loc, _ := ParseURL(srv.Bucket(t, "conditions", "p"))
	ctx := context.Background()
	b, err := newBucket(ctx, loc)
	if err != nil {
		t.Fatal(err)
	}
	put := func(data, version string) (string, error) {
		return b.put(ctx, "labels/x", bytes.NewReader([]byte(data)), int64(len(data)), version, nil)
	}
	v1, err := put("one", createOnly)
	if err != nil || v1 == "" {
		t.Fatalf("create: %q, %v", v1, err)
	}
	if _, err := put("two", createOnly); !errors.Is(err, errConflict) {
		t.Fatalf("create over an existing object: %v, want a conflict", err)
	}
	v2, err := put("two", v1)
	if err != nil || v2 == v1 {
		t.Fatalf("update over the version read: %q, %v", v2, err)
	}
	if _, err := put("three", v1); !errors.Is(err, errConflict) {
		t.Fatalf("update over a stale version: %v, want a conflict", err)
	}
	// A DELETE on a stale version must be refused; a service that does
	// not refuse it (Ceph RGW deletes anyway) must be found out by the
	// probe, so that labels are removed by tombstone there.
	if err := b.del(ctx, "labels/x", v1); !errors.Is(err, errConflict) {
		labels := &s3Labels{b: b, log: slog.Default()}
		if tombs, perr := labels.tombstones(ctx); !tombs || perr != nil {
			t.Fatalf("delete of a stale version: %v, not refused, and the probe says tombstones %v, %v", err, tombs, perr)
		}
		t.Logf("the service does not refuse a stale DELETE (%v); the probe found it out", err)
		if _, err := put("two", createOnly); err != nil {
			t.Fatal(err)
		}
		return
	}
	body, info, err := b.get(ctx, "labels/x", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	if info.etag != v2 || info.size != 3 {
		t.Fatalf("after refused changes: %+v, want version %q of 3 bytes", info, v2)
	}
	if err := b.del(ctx, "labels/x", v2); err != nil {
		t.Fatalf("delete of the version read: %v", err)
	}
	if _, err := b.head(ctx, "labels/x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// A change on a version of an object deleted since is a lost race,
	// to be read again, not a missing label.
	if _, err := put("three", v2); !errors.Is(err, errConflict) {
		t.Fatalf("update of a deleted object's version: %v, want a conflict", err)
	}
}

// TestRacingAppends races appenders until some of them have lost a race
// and retried, and checks that no append was lost.
func TestRacingAppends(t *testing.T) {
	srv := s3test.Start(t)
	loc, _ := ParseURL(srv.Bucket(t, "racing", ""))
	ctx := context.Background()
	s, err := Open(ctx, loc, Options{SpoolDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var want []store.Hash
	for round := 0; s.conflicts.Load() == 0; round++ {
		if round == 20 {
			t.Fatal("20 rounds of 8 racing appenders and no append had to be retried")
		}
		want = append(want, storetest.AppendRacing(t, "hot", 8, s)...)
	}
	storetest.WantAll(t, s, "hot", want)
	t.Logf("%d appends, %d retries", len(want), s.conflicts.Load())
}
