package storetest

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/theater-storefs/theater-storefs/store"
)

// RunCopy checks store.Copy from src to dst and back, a copy cut short
// and resumed included. src and dst start empty.
func RunCopy(t *testing.T, src, dst, back store.Backend) {
	var hashes []store.Hash
	for i := range 40 {
		h, err := src.PutAtLabel(ctx, fmt.Sprintf("ns/l%d", i%4), fmt.Appendf(nil, "blob %d", i))
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, h)
	}
	// Cut the first copy short after a few blobs.
	cut, cancel := context.WithCancel(ctx)
	_, err := store.Copy(cut, src, dst, store.CopyOptions{Jobs: 2, Progress: func(done, _ int) {
		if done == 10 {
			cancel()
		}
	}})
	cancel()
	if err == nil {
		t.Fatal("a canceled copy reported no error")
	}
	if names, _ := dst.ListLabels(ctx); len(names) != 0 {
		t.Fatalf("labels were copied before all blobs: %v", names)
	}
	rep, err := store.Copy(ctx, src, dst, store.CopyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Blobs != 40 || rep.Copied >= 40 || rep.Copied < 1 || rep.LabelsCopied != 4 {
		t.Fatalf("resumed copy: %+v; want some of the 40 blobs left to copy and 4 labels", rep)
	}
	rep, err = store.Copy(ctx, dst, back, store.CopyOptions{})
	if err != nil || rep.Copied != 40 || rep.Bytes != 270 {
		t.Fatalf("copy back: %+v, %v", rep, err)
	}
	for _, b := range []store.Backend{dst, back} {
		all, err := b.ListAllContent(ctx)
		if err != nil || len(all) != 40 {
			t.Fatalf("a copy holds %d blobs, %v", len(all), err)
		}
		for i, h := range hashes {
			if got, err := b.Get(ctx, h); err != nil || string(got) != fmt.Sprint("blob ", i) {
				t.Fatalf("blob %d: %q, %v", i, got, err)
			}
		}
		for l := range 4 {
			name := fmt.Sprintf("ns/l%d", l)
			want, _ := src.GetByLabel(ctx, name)
			if got := refs(t, b, name); !slices.Equal(got, want) {
				t.Fatalf("label %s: %v, want %v", name, got, want)
			}
		}
	}
	// A label changed at the source is brought over again; one only the
	// destination has is kept.
	if err := src.ReplaceAtLabel(ctx, "ns/l0", hashes[5]); err != nil {
		t.Fatal(err)
	}
	if err := dst.Label(ctx, "mine", hashes[0]); err != nil {
		t.Fatal(err)
	}
	// And a ref another node appended at the destination, to a blob only
	// it has, is dropped and reported.
	theirs, err := dst.PutAtLabel(ctx, "ns/l1", []byte("stored at the destination"))
	if err != nil {
		t.Fatal(err)
	}
	rep, err = store.Copy(ctx, src, dst, store.CopyOptions{})
	if err != nil || rep.Copied != 0 || rep.LabelsCopied != 2 || !slices.Equal(rep.Dropped, []string{"ns/l1"}) {
		t.Fatalf("second copy: %+v, %v; want two labels changed, ns/l1 reported", rep, err)
	}
	wantRefs(t, dst, "ns/l0", hashes[5])
	wantRefs(t, dst, "mine", hashes[0])
	if ok, _ := dst.Exists(ctx, theirs); !ok {
		t.Fatal("the dropped ref's blob was removed")
	}
}
