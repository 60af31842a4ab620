package remote

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/theater-storefs/theater-storefs/store"
)

// EtcdScheme starts a --labels value: etcd://host:port[,host:port]/prefix.
const EtcdScheme = "etcd://"

// etcdLabels keeps labels in etcd, under <prefix>/labels/<name>, each
// value a label file as a store directory holds it, and the time it was
// written under <prefix>/mtime/<name>. A label's version is its key's
// mod revision; every change is a transaction on it, and the feed is an
// etcd watch: changes show on other nodes at once.
type etcdLabels struct {
	c      *clientv3.Client
	prefix string // "/<prefix>/", or "/"
	log    *slog.Logger
}

// ParseEtcdURL reads etcd://host:port[,host:port][/prefix] into its
// endpoints and key prefix.
func ParseEtcdURL(s string) (endpoints []string, prefix string, err error) {
	bad := func(why string) ([]string, string, error) {
		return nil, "", fmt.Errorf("labels %q: %s (want etcd://host:port/prefix)", s, why)
	}
	if !strings.HasPrefix(s, EtcdScheme) {
		return bad("not an etcd:// URL")
	}
	u, err := url.Parse(s)
	if err != nil {
		return bad(err.Error())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return bad("no parameters, user names or fragments are taken")
	}
	for _, ep := range strings.Split(u.Host, ",") {
		if ep == "" || !strings.Contains(ep, ":") {
			return bad("an endpoint needs a host and a port")
		}
		endpoints = append(endpoints, "http://"+ep)
	}
	prefix = strings.Trim(u.Path, "/")
	if strings.Contains(prefix, "//") {
		return bad("empty path segment in the prefix")
	}
	if prefix == "" {
		return endpoints, "/", nil
	}
	return endpoints, "/" + prefix + "/", nil
}

func openEtcd(ctx context.Context, labelsURL string, log *slog.Logger) (*etcdLabels, error) {
	endpoints, prefix, err := ParseEtcdURL(labelsURL)
	if err != nil {
		return nil, err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("labels %s: %w", labelsURL, err)
	}
	// One read tells an unreachable cluster apart from a working one.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Get(ctx, prefix+"labels/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		c.Close()
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("labels %s: %w: no answer from etcd at %s within 5 s", labelsURL, store.ErrUnavailable, strings.Join(endpoints, ", "))
		}
		return nil, fmt.Errorf("labels %s: %w: %v", labelsURL, store.ErrUnavailable, err)
	}
	return &etcdLabels{c: c, prefix: prefix, log: log}, nil
}

func (e *etcdLabels) key(name string) string   { return e.prefix + "labels/" + name }
func (e *etcdLabels) mtime(name string) string { return e.prefix + "mtime/" + name }

// callTimeout bounds each call to the cluster: one that does not answer
// fails the operation rather than hang it (the mount's operations are not
// cancelled by their callers).
const callTimeout = 10 * time.Second

// bounded gives a call its own deadline within ctx's.
func bounded(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, callTimeout)
}

// etcdErr marks a failed call as the cluster's, unless the caller's ctx
// ended it.
func etcdErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return serviceError("etcd: " + err.Error())
}

func (e *etcdLabels) read(ctx context.Context, name string) ([]byte, string, time.Time, error) {
	cctx, cancel := bounded(ctx)
	defer cancel()
	resp, err := e.c.Txn(cctx).Then(clientv3.OpGet(e.key(name)), clientv3.OpGet(e.mtime(name))).Commit()
	if err != nil {
		return nil, "", time.Time{}, etcdErr(ctx, err)
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, "", time.Time{}, store.ErrNotFound
	}
	var mod time.Time
	if m := resp.Responses[1].GetResponseRange().Kvs; len(m) > 0 {
		if ns, err := strconv.ParseInt(string(m[0].Value), 10, 64); err == nil {
			mod = time.Unix(0, ns)
		}
	}
	if len(kvs[0].Value) > store.MaxLabelFile {
		return nil, "", mod, fmt.Errorf("%w: label is %d bytes, over the %d limit", store.ErrCorrupt, len(kvs[0].Value), store.MaxLabelFile)
	}
	return kvs[0].Value, strconv.FormatInt(kvs[0].ModRevision, 10), mod, nil
}

// cond is the transaction's condition for version.
func (e *etcdLabels) cond(name, version string) ([]clientv3.Cmp, error) {
	switch version {
	case anyVersion:
		return nil, nil
	case createOnly:
		return []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(e.key(name)), "=", 0)}, nil
	}
	rev, err := strconv.ParseInt(version, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("BUG: etcd version %q is not a revision", version)
	}
	return []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(e.key(name)), "=", rev)}, nil
}

func (e *etcdLabels) write(ctx context.Context, name string, data []byte, version string) (string, error) {
	cmps, err := e.cond(name, version)
	if err != nil {
		return "", err
	}
	now := strconv.FormatInt(time.Now().UnixNano(), 10)
	cctx, cancel := bounded(ctx)
	defer cancel()
	resp, err := e.c.Txn(cctx).If(cmps...).Then(clientv3.OpPut(e.key(name), string(data)), clientv3.OpPut(e.mtime(name), now)).Commit()
	if err != nil {
		return "", etcdErr(ctx, err)
	}
	if !resp.Succeeded {
		return "", errConflict
	}
	// Both puts were made at the transaction's revision.
	return strconv.FormatInt(resp.Header.Revision, 10), nil
}

func (e *etcdLabels) remove(ctx context.Context, name, version string) error {
	cmps, err := e.cond(name, version)
	if err != nil {
		return err
	}
	cctx, cancel := bounded(ctx)
	defer cancel()
	resp, err := e.c.Txn(cctx).If(cmps...).Then(clientv3.OpDelete(e.key(name)), clientv3.OpDelete(e.mtime(name))).Commit()
	if err != nil {
		return etcdErr(ctx, err)
	}
	if !resp.Succeeded {
		return errConflict
	}
	return nil
}

// page is how many keys one range read brings.
const page = 1000

// each calls fn for every key under dir, in key order, a page at a time.
func (e *etcdLabels) each(ctx context.Context, dir string, fn func(name string, rev int64) error) error {
	start, end := e.key(dir), clientv3.GetPrefixRangeEnd(e.key(dir))
	for {
		cctx, cancel := bounded(ctx)
		resp, err := e.c.Get(cctx, start, clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(page), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
		cancel()
		if err != nil {
			return etcdErr(ctx, err)
		}
		for _, kv := range resp.Kvs {
			if err := fn(strings.TrimPrefix(string(kv.Key), e.key("")), kv.ModRevision); err != nil {
				if err == errStop {
					return nil
				}
				return err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

func (e *etcdLabels) list(ctx context.Context, dir string, fn func(name, version string) error) error {
	return e.each(ctx, dir, func(name string, rev int64) error {
		return fn(name, strconv.FormatInt(rev, 10))
	})
}

func (e *etcdLabels) readDir(ctx context.Context, dir string, fn func(string, bool) error) error {
	last := ""
	return e.each(ctx, dir, func(name string, _ int64) error {
		rest := strings.TrimPrefix(name, dir)
		first, _, nested := strings.Cut(rest, "/")
		if first == "" || first == last {
			return nil // dir's own marker, or a name already given
		}
		last = first
		return fn(first, nested)
	})
}

func (e *etcdLabels) mark(ctx context.Context, ns string) error {
	cctx, cancel := bounded(ctx)
	defer cancel()
	_, err := e.c.Put(cctx, e.key(ns+"/"), "")
	return etcdErr(ctx, err)
}

func (e *etcdLabels) clear(ctx context.Context, dir string) error {
	err := e.each(ctx, dir, func(name string, _ int64) error {
		if name != dir {
			return store.ErrNotEmpty
		}
		return nil
	})
	if err != nil {
		return err
	}
	cctx, cancel := bounded(ctx)
	defer cancel()
	_, err = e.c.Delete(cctx, e.key(dir))
	return etcdErr(ctx, err)
}

// changes watches the labels: every change shows at once. A watch cut off
// (a compaction, a lost leader) reports an unknown set of changes and is
// made again.
func (e *etcdLabels) changes(ctx context.Context, _ time.Duration, fn func([]string)) (<-chan struct{}, error) {
	cctx, cancel := bounded(ctx)
	resp, err := e.c.Get(cctx, e.key(""), clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return nil, etcdErr(ctx, err)
	}
	rev := resp.Header.Revision + 1
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			wc := e.c.Watch(clientv3.WithRequireLeader(ctx), e.key(""), clientv3.WithPrefix(), clientv3.WithRev(rev))
			for wr := range wc {
				if err := wr.Err(); err != nil {
					e.log.Warn("label watch ended; watching again", "err", err)
					fn(nil)
					if wr.CompactRevision > 0 {
						rev = wr.CompactRevision
					}
					break
				}
				var names []string
				for _, ev := range wr.Events {
					names = append(names, strings.TrimPrefix(string(ev.Kv.Key), e.key("")))
					rev = ev.Kv.ModRevision + 1
				}
				if len(names) > 0 {
					fn(names)
				}
			}
			select {
			case <-ctx.Done():
			case <-e.c.Ctx().Done():
				return // the client is closed
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return done, nil
}

func (e *etcdLabels) close() error { return e.c.Close() }
