package store_test

import (
	"bytes"
	"encoding/hex"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/theater-storefs/theater-storefs/internal/theatertest"
	"github.com/theater-storefs/theater-storefs/store"
)

// The seed corpora make these run as ordinary tests; `go test -fuzz` explores
// further.

func FuzzValidateLabel(f *testing.F) {
	for _, s := range []string{
		"", "/", "a", "a/b", "a//b", "/a", "a/", ".", "..", "../x", "x/..", "x/./y",
		"a\x00b", "actor:a1b2c3d4-0000-4000-8000-000000000000", "release: v1 final",
		"ünï/cödé", "...", "..x", "a\\..\\b", strings.Repeat("c", 256), strings.Repeat("a/", 2049),
	} {
		f.Add(s)
	}
	const base = "/base/store/labels"
	f.Fuzz(func(t *testing.T, name string) {
		err := store.ValidateLabel(name)
		if err != nil {
			if !errors.Is(err, store.ErrInvalidLabel) {
				t.Fatalf("ValidateLabel(%q) = %v, not ErrInvalidLabel", name, err)
			}
			return
		}
		if name == "" || len(name) > store.MaxLabelLen || strings.IndexByte(name, 0) >= 0 || name[0] == '/' {
			t.Fatalf("accepted %q", name)
		}
		for _, c := range strings.Split(name, "/") {
			if c == "" || c == "." || c == ".." || len(c) > store.MaxComponentLen {
				t.Fatalf("accepted %q with component %q", name, c)
			}
		}
		joined := filepath.Join(base, name)
		if !strings.HasPrefix(joined, base+"/") {
			t.Fatalf("%q joined under %s is %s, outside", name, base, joined)
		}
		// Joining changed nothing: the name is already clean, so the path a
		// label names is exactly labels/<name>.
		if joined != base+"/"+name {
			t.Fatalf("%q is not clean: joins to %s", name, joined)
		}
		rel, err := filepath.Rel(base, joined)
		if err != nil || rel != name {
			t.Fatalf("Rel = %q, %v", rel, err)
		}
	})
}

func FuzzParseLabelFile(f *testing.F) {
	h1, h2 := shaStr("1").String(), shaStr("2").String()
	for _, s := range []string{
		"", h1, h1 + "\n" + h2, h1 + "\n" + h2 + "\n", h1 + "\r\n" + h2 + "\r\n", "\n\n" + h1 + "\n\n",
		h1 + "\ngarbage\n" + h2, strings.ToUpper(h1), "  " + h1 + "  ", h1 + "\x00", "\r\r\n\n",
		h1 + "\u00a0", "\u0085" + h1,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		refs, bad := store.ParseLabelFile(b)
		lines := bytes.Split(b, []byte("\n"))
		nonBlank := 0
		for _, l := range lines {
			if len(bytes.TrimSpace(l)) > 0 {
				nonBlank++
			}
		}
		if len(refs)+len(bad) != nonBlank {
			t.Fatalf("%d refs + %d bad lines, but %d non-blank lines", len(refs), len(bad), nonBlank)
		}
		for i, n := range bad {
			if n < 1 || n > len(lines) || (i > 0 && n <= bad[i-1]) {
				t.Fatalf("bad line numbers %v out of order or range (%d lines)", bad, len(lines))
			}
		}
		out := store.FormatLabelFile(refs)
		if len(refs) > 0 && len(out) != 41*len(refs)-1 {
			t.Fatalf("formatted %d refs into %d bytes", len(refs), len(out))
		}
		if bytes.HasSuffix(out, []byte("\n")) {
			t.Fatal("formatted label file ends with a newline")
		}
		refs2, bad2 := store.ParseLabelFile(out)
		if !slices.Equal(refs, refs2) || len(bad2) != 0 {
			t.Fatalf("round trip: %v -> %q -> %v, bad %v", refs, out, refs2, bad2)
		}
		if !bytes.Equal(store.FormatLabelFile(refs2), out) {
			t.Fatal("formatting is not stable")
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{
		"", "store:", "store:hash:", "store:hash:" + shaStr("x").String(), "store:label", "store:a:b",
		"/tmp/x", "relative", "Store:x", "store:hash", "store:hash:store:hash:", "stor:e",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ref string) {
		kind, arg := store.ParseReference(ref)
		switch kind {
		case store.RefHash:
			if "store:hash:"+arg != ref {
				t.Fatalf("RefHash %q from %q", arg, ref)
			}
		case store.RefLabel:
			if "store:"+arg != ref || strings.HasPrefix(arg, "hash:") {
				t.Fatalf("RefLabel %q from %q", arg, ref)
			}
		case store.RefPath:
			if arg != ref || strings.HasPrefix(ref, "store:") {
				t.Fatalf("RefPath %q from %q", arg, ref)
			}
		default:
			t.Fatalf("kind %v", kind)
		}
	})
}

func FuzzParseChainEvent(f *testing.F) {
	parent := bytes.Repeat([]byte{0xab}, 20)
	seeds := [][]byte{
		theatertest.ChainEventJSON(nil, "init", []byte(`{"a":1}`), 1740000000, "event 0"),
		theatertest.ChainEventJSON(parent, "message", []byte("payload"), 1740000004, "event 4"),
		theatertest.ChainEventJSONNoDescription(parent, "wasm", nil, 0),
		[]byte(`{"hash":[1,2,3],"parent_hash":"` + hex.EncodeToString(parent) + `","event_type":"t","data":[1],"timestamp":1,"description":"d","unknown":{"x":[null]}}`),
		[]byte(`{"parent_hash":[1,2],"data":"str"}`),
		[]byte(`{"parent_hash":[256],"data":[-1]}`),
		[]byte(`{"parent_hash":"zz"}`),
		[]byte(`{"parent_hash":1e400,"timestamp":-1}`),
		[]byte(`null`), []byte(`[]`), []byte(``), []byte(`{"data":[1e3]}`),
	}
	for _, s := range seeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ev, err := store.ParseChainEvent(b)
		if err != nil {
			if ev != nil {
				t.Fatal("an error with an event")
			}
			return
		}
		if ev == nil {
			t.Fatal("no event and no error")
		}
		// Accepting the input again gives the same event.
		ev2, err := store.ParseChainEvent(b)
		if err != nil || !sameEvent(ev, ev2) {
			t.Fatal("parse is not deterministic")
		}
	})
}

func sameEvent(a, b *store.ChainEvent) bool {
	if (a.Parent == nil) != (b.Parent == nil) || (a.Parent != nil && *a.Parent != *b.Parent) {
		return false
	}
	return a.EventType == b.EventType && bytes.Equal(a.Data, b.Data) && a.Timestamp == b.Timestamp && a.Description == b.Description
}

// Every event Theater can write parses back to what was written.
func FuzzChainEventRoundTrip(f *testing.F) {
	f.Add([]byte{}, "init", []byte("{}"), uint64(0), "event 0", true)
	f.Add(bytes.Repeat([]byte{7}, 20), "message", []byte{0, 255, '"'}, uint64(1740000004), "quote \" and \\ and \n", false)
	f.Add(bytes.Repeat([]byte{1}, 20), "ünï", []byte(nil), ^uint64(0), "\u2028<>&", true)
	f.Fuzz(func(t *testing.T, parent []byte, typ string, data []byte, ts uint64, desc string, hasDesc bool) {
		// Theater's strings are valid UTF-8; its parents are 20 bytes or none.
		typ, desc = strings.ToValidUTF8(typ, "?"), strings.ToValidUTF8(desc, "?")
		if !utf8.ValidString(typ) || !utf8.ValidString(desc) {
			t.Fatal("ToValidUTF8 failed")
		}
		var p []byte
		if len(parent) >= 20 {
			p = parent[:20]
		}
		var b []byte
		if hasDesc {
			b = theatertest.ChainEventJSON(p, typ, data, ts, desc)
		} else {
			b = theatertest.ChainEventJSONNoDescription(p, typ, data, ts)
			desc = ""
		}
		ev, err := store.ParseChainEvent(b)
		if err != nil {
			t.Fatalf("ParseChainEvent(%s): %v", b, err)
		}
		if (ev.Parent == nil) != (p == nil) || (p != nil && !bytes.Equal(ev.Parent[:], p)) {
			t.Fatalf("parent %v, want %x", ev.Parent, p)
		}
		if ev.EventType != typ || !bytes.Equal(ev.Data, data) || ev.Timestamp != ts || ev.Description != desc {
			t.Fatalf("parsed %+v from %s", ev, b)
		}
	})
}

func FuzzParseHash(f *testing.F) {
	for _, s := range []string{"", shaStr("x").String(), strings.ToUpper(shaStr("x").String()), strings.Repeat("g", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := store.ParseHash(s)
		if store.IsHashName(s) != (err == nil) {
			t.Fatalf("IsHashName and ParseHash disagree on %q", s)
		}
		if err == nil && h.String() != s {
			t.Fatalf("ParseHash(%q).String() = %s", s, h)
		}
		if err != nil && !errors.Is(err, store.ErrInvalidHash) {
			t.Fatalf("error %v", err)
		}
	})
}
