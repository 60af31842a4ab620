package remote

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/internal/s3test"
	"github.com/theater-storefs/theater-storefs/store"
)

// A fault the proxy makes of a request.
type fault int

const (
	pass        fault = iota
	lostAnswer        // forwarded, then answered 500: done, but the caller cannot know
	unavailable       // answered 503, not forwarded
)

// faultProxy stands between the store and versitygw and makes faults of
// the requests rule picks.
type faultProxy struct {
	rp   *httputil.ReverseProxy
	mu   sync.Mutex
	rule func(r *http.Request) fault
}

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	rule := p.rule
	p.mu.Unlock()
	f := pass
	if rule != nil {
		f = rule(r) // unlocked: a rule may make requests of its own
	}
	switch f {
	case lostAnswer:
		p.rp.ServeHTTP(httptest.NewRecorder(), r)
		s3Error(w, http.StatusInternalServerError, "InternalError")
	case unavailable:
		s3Error(w, http.StatusServiceUnavailable, "ServiceUnavailable")
	default:
		p.rp.ServeHTTP(w, r)
	}
}

func s3Error(w http.ResponseWriter, status int, code string) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	w.Write([]byte(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>` + code + `</Code><Message>injected by the test</Message></Error>`))
}

func (p *faultProxy) set(rule func(r *http.Request) fault) {
	p.mu.Lock()
	p.rule = rule
	p.mu.Unlock()
}

// once makes fault of the first request that matches, then passes all.
func once(f fault, match func(r *http.Request) bool) func(*http.Request) fault {
	var done atomic.Bool
	return func(r *http.Request) fault {
		if match(r) && !done.Swap(true) {
			return f
		}
		return pass
	}
}

// conditionalOn matches a conditional PUT or DELETE of key.
func conditionalOn(method, key string) func(r *http.Request) bool {
	return func(r *http.Request) bool {
		return r.Method == method && strings.HasSuffix(r.URL.Path, "/"+key) && r.Header.Get("If-Match") != ""
	}
}

func openThroughProxy(t *testing.T) (*Store, *faultProxy) {
	srv := s3test.Start(t)
	target, _ := url.Parse(srv.Endpoint)
	p := &faultProxy{rp: httputil.NewSingleHostReverseProxy(target)}
	ts := httptest.NewServer(p)
	t.Cleanup(ts.Close)
	srv.Bucket(t, "faults", "")
	loc := Location{Bucket: srv.BucketName("faults"), Endpoint: ts.URL}
	s, err := Open(context.Background(), loc, Options{SpoolDir: t.TempDir(), Logger: slog.Default()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, p
}

// TestLostAnswers: a change that was made but answered 500 is taken for
// made when the label, read again, shows it; nothing is done twice and no
// error is reported.
func TestLostAnswers(t *testing.T) {
	ctx := context.Background()
	for _, tombs := range []bool{false, true} {
		s, p := openThroughProxy(t)
		if tombs {
			s.labels.(*s3Labels).forceTombs = true
		}
		a, _ := s.Store(ctx, []byte("a"))
		c, _ := s.Store(ctx, []byte("c"))
		s.Label(ctx, "x", a)

		p.set(once(lostAnswer, conditionalOn("PUT", "labels/x")))
		if err := s.Label(ctx, "x", c); err != nil {
			t.Fatalf("append whose answer was lost: %v", err)
		}
		if refs, _ := s.GetByLabel(ctx, "x"); len(refs) != 2 {
			t.Fatalf("after an append whose answer was lost: %v", refs)
		}

		method := "DELETE"
		if tombs {
			method = "PUT"
		}
		p.set(once(lostAnswer, conditionalOn(method, "labels/x")))
		if err := s.RemoveFromLabel(ctx, "x", c); err != nil {
			t.Fatalf("tombs %v: removal of a ref whose answer was lost: %v", tombs, err)
		}
		p.set(once(lostAnswer, conditionalOn(method, "labels/x")))
		if err := s.RemoveLabel(ctx, "x"); err != nil {
			t.Fatalf("tombs %v: removal whose answer was lost: %v", tombs, err)
		}
		if _, err := s.GetByLabel(ctx, "x"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("tombs %v: after the removal: %v", tombs, err)
		}

		s.Label(ctx, "from", a)
		p.set(once(lostAnswer, conditionalOn(method, "labels/from")))
		if err := s.RenameLabel(ctx, "from", "to"); err != nil {
			t.Fatalf("tombs %v: rename whose removal's answer was lost: %v", tombs, err)
		}
		if refs, err := s.GetByLabel(ctx, "to"); err != nil || len(refs) != 1 || refs[0] != a {
			t.Fatalf("tombs %v: after the rename, to holds %v, %v", tombs, refs, err)
		}
		if _, err := s.GetByLabel(ctx, "from"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("tombs %v: after the rename, from: %v", tombs, err)
		}
	}
}

// TestUnavailable: a service that answers 503 fails a change at once with
// ErrUnavailable and its words, rather than retrying it as a lost race.
func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	s, p := openThroughProxy(t)
	a, _ := s.Store(ctx, []byte("a"))
	s.Label(ctx, "x", a)
	p.set(func(r *http.Request) fault {
		if r.Method == "PUT" && strings.Contains(r.URL.Path, "/labels/") {
			return unavailable
		}
		return pass
	})
	start := time.Now()
	err := s.Label(ctx, "y", a)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "503") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("a change while the service answers 503: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failing took %v", d)
	}
}

// TestRenameTakesBack: a rename whose source changes between the write of
// the destination and the removal of the source puts the destination
// back and moves the source as it is now.
func TestRenameTakesBack(t *testing.T) {
	ctx := context.Background()
	s, p := openThroughProxy(t)
	a, _ := s.Store(ctx, []byte("a"))
	b, _ := s.Store(ctx, []byte("b"))
	old, _ := s.Store(ctx, []byte("old"))
	s.Label(ctx, "from", a)
	s.Label(ctx, "to", old)
	// Just before the source's first removal, another writer appends to
	// it.
	var fired atomic.Bool
	p.set(func(r *http.Request) fault {
		// The removal: a DELETE, or a tombstone's conditional PUT on a
		// service that ignores conditions on DELETE.
		removal := r.Method == "DELETE" || (r.Method == "PUT" && r.Header.Get("If-Match") != "")
		if removal && strings.HasSuffix(r.URL.Path, "/labels/from") && !fired.Swap(true) {
			if err := s.Label(ctx, "from", b); err != nil {
				t.Errorf("the racing append: %v", err)
			}
		}
		return pass
	})
	if err := s.RenameLabel(ctx, "from", "to"); err != nil {
		t.Fatal(err)
	}
	refs, err := s.GetByLabel(ctx, "to")
	if err != nil || len(refs) != 2 || refs[0] != a || refs[1] != b {
		t.Fatalf("to holds %v, %v; want the source with the racing append", refs, err)
	}
	if _, err := s.GetByLabel(ctx, "from"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("from after the rename: %v", err)
	}
}

// TestRenameOfRemovedLabel: a rename whose source another writer removes
// between the write of the destination and the source's removal fails
// with ErrNotFound, and leaves the destination as it was.
func TestRenameOfRemovedLabel(t *testing.T) {
	ctx := context.Background()
	s, p := openThroughProxy(t)
	s.labels.(*s3Labels).forceTombs = true // removal is a conditional PUT
	a, _ := s.Store(ctx, []byte("a"))
	old, _ := s.Store(ctx, []byte("old"))
	s.Label(ctx, "from", a)
	s.Label(ctx, "to", old)
	var fired atomic.Bool
	p.set(func(r *http.Request) fault {
		if r.Method == "PUT" && strings.HasSuffix(r.URL.Path, "/labels/from") && r.Header.Get("If-Match") != "" && !fired.Swap(true) {
			if err := s.RemoveLabel(ctx, "from"); err != nil {
				t.Errorf("the racing removal: %v", err)
			}
		}
		return pass
	})
	if err := s.RenameLabel(ctx, "from", "to"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("rename of a label removed meanwhile: %v, want ErrNotFound", err)
	}
	if refs, err := s.GetByLabel(ctx, "to"); err != nil || len(refs) != 1 || refs[0] != old {
		t.Fatalf("to holds %v, %v; want what it held before", refs, err)
	}
}
