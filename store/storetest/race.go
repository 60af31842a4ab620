package storetest

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/theater-storefs/theater-storefs/store"
)

// OpenLocal opens a store directory in a temp directory for the test.
func OpenLocal(t *testing.T) *store.Store {
	t.Helper()
	s, err := store.Open(t.TempDir(), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

var calls atomic.Int64

// AppendRacing stores each new blobs through each of nodes (one store,
// or several on shared storage) and appends all of them to label at once,
// one goroutine a blob. It fails the test on any error and returns the
// hashes appended.
func AppendRacing(t *testing.T, label string, each int, nodes ...store.Backend) []store.Hash {
	t.Helper()
	type job struct {
		b store.Backend
		h store.Hash
	}
	var jobs []job
	call := calls.Add(1) // new content at each call
	for i := range each {
		for n, b := range nodes {
			h, err := b.Store(ctx, fmt.Appendf(nil, "%s: node %d blob %d, call %d", label, n, i, call))
			if err != nil {
				t.Fatal(err)
			}
			jobs = append(jobs, job{b, h})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(jobs))
	for _, j := range jobs {
		wg.Go(func() { errs <- j.b.Label(ctx, label, j.h) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	out := make([]store.Hash, len(jobs))
	for i, j := range jobs {
		out[i] = j.h
	}
	return out
}

// WantAll checks that label holds exactly want, in any order: no append
// lost, none made twice.
func WantAll(t *testing.T, b store.Backend, label string, want []store.Hash) {
	t.Helper()
	got := refs(t, b, label)
	got, want = slices.Clone(got), slices.Clone(want)
	slices.SortFunc(got, store.CompareHashes)
	slices.SortFunc(want, store.CompareHashes)
	if !slices.Equal(got, want) {
		t.Fatalf("after %d racing appends label %q holds %d refs", len(want), label, len(got))
	}
}
