package remote_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/etcdtest"
	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
	"github.com/theater-storefs/theater-storefs/store/storetest"
)

// openEtcd opens a store with blobs in a fresh bucket and labels in etcd
// under a fresh prefix.
func openEtcd(t *testing.T, srv *s3test.Server, etcd string) *remote.Store {
	t.Helper()
	name := fmt.Sprintf("etcd-%d", buckets.Add(1))
	loc, err := remote.ParseURL(srv.Bucket(t, name, ""))
	if err != nil {
		t.Fatal(err)
	}
	s, err := remote.Open(ctx, loc, remote.Options{SpoolDir: t.TempDir(), Labels: "etcd://" + etcd + "/" + name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestEtcdConformance(t *testing.T) {
	srv, etcd := s3test.Start(t), etcdtest.Start(t)
	storetest.Run(t, func(t *testing.T) store.Backend { return openEtcd(t, srv, etcd) })
}

// TestEtcdSharedLabels: two stores on one bucket and one etcd prefix, as
// two nodes: an append on one races appends on the other and none is
// lost, and the other's feed hears of each change.
func TestEtcdSharedLabels(t *testing.T) {
	srv, etcd := s3test.Start(t), etcdtest.Start(t)
	loc, _ := remote.ParseURL(srv.Bucket(t, "shared-etcd", ""))
	open := func() *remote.Store {
		s, err := remote.Open(ctx, loc, remote.Options{SpoolDir: t.TempDir(), Labels: "etcd://" + etcd + "/nodes"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	a, b := open(), open()
	feed, err := b.Feed()
	if err != nil {
		t.Fatal(err)
	}
	defer feed.Close()
	want := storetest.AppendRacing(t, "hot", 20, a, b)
	storetest.WantAll(t, a, "hot", want)
	storetest.WantAll(t, b, "hot", want)
	select {
	case <-feed.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("the other node's feed heard nothing of 40 appends")
	}
	changes, overflow := feed.Take()
	if overflow || !slices.ContainsFunc(changes, func(c store.Change) bool { return c.Name == "hot" }) {
		t.Fatalf("feed: %v, overflow %v; want a change of hot", changes, overflow)
	}
}

func TestParseEtcdURL(t *testing.T) {
	eps, prefix, err := remote.ParseEtcdURL("etcd://127.0.0.1:2379,127.0.0.2:2379/theater/prod")
	if err != nil || !slices.Equal(eps, []string{"http://127.0.0.1:2379", "http://127.0.0.2:2379"}) || prefix != "/theater/prod/" {
		t.Fatalf("ParseEtcdURL = %v, %q, %v", eps, prefix, err)
	}
	if _, prefix, _ := remote.ParseEtcdURL("etcd://h:1"); prefix != "/" {
		t.Fatalf("no prefix: %q", prefix)
	}
	for _, bad := range []string{"", "http://h:1", "etcd://", "etcd://host", "etcd://h:1/a//b", "etcd://h:1?x=1", "etcd://u@h:1"} {
		if _, _, err := remote.ParseEtcdURL(bad); err == nil {
			t.Errorf("ParseEtcdURL(%q) took it", bad)
		}
	}
}
