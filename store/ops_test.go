package store_test

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/store"
)

func TestStoreGetExists(t *testing.T) {
	s, dir := newStore(t)

	cases := []struct {
		name    string
		content []byte
	}{
		{"empty", []byte{}},
		{"text", []byte("hello, theater")},
		{"binary", []byte{0, 1, 2, 0xff, 0xfe, '\n', '\r', 0}},
		{"large", bytes.Repeat([]byte("0123456789abcdef"), 1<<16)}, // 1 MiB, over one copy buffer
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, err := s.Store(bg, c.content)
			if err != nil {
				t.Fatalf("Store: %v", err)
			}
			if want := sha(c.content); h != want {
				t.Fatalf("Store = %s, want SHA-1 %s", h, want)
			}
			onDisk, err := os.ReadFile(blobPath(dir, h))
			if err != nil {
				t.Fatalf("blob file: %v", err)
			}
			if !bytes.Equal(onDisk, c.content) {
				t.Fatalf("data/%s holds %d bytes, want the %d stored", h, len(onDisk), len(c.content))
			}
			got, err := s.Get(bg, h)
			if err != nil {
				t.Fatalf("Get: %v", err)
			}
			if !bytes.Equal(got, c.content) {
				t.Fatalf("Get returned %d bytes, want %d", len(got), len(c.content))
			}
			ok, err := s.Exists(bg, h)
			if err != nil || !ok {
				t.Fatalf("Exists = %v, %v; want true, nil", ok, err)
			}
		})
	}

	missing := shaStr("never stored")
	if ok, err := s.Exists(bg, missing); err != nil || ok {
		t.Fatalf("Exists(missing) = %v, %v; want false, nil", ok, err)
	}
	_, err := s.Get(bg, missing)
	wantErr(t, "Get(missing)", err, store.ErrNotFound)
	if got := len(dataNames(t, dir)); got != len(cases) {
		t.Fatalf("data/ holds %d files, want %d", got, len(cases))
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ keeps %v after successful stores", left)
	}
}

func TestStoreDedup(t *testing.T) {
	s, dir := newStore(t)
	h := mustStore(t, s, "same content")
	path := blobPath(dir, h)
	ino := inode(t, path)

	for range 3 {
		if h2 := mustStore(t, s, "same content"); h2 != h {
			t.Fatalf("second Store = %s, want %s", h2, h)
		}
		if _, _, err := s.Put(bg, strings.NewReader("same content")); err != nil {
			t.Fatalf("Put of same content: %v", err)
		}
	}
	if got := inode(t, path); got != ino {
		t.Fatalf("blob was rewritten: inode %d, was %d", got, ino)
	}
	if names := dataNames(t, dir); !slices.Equal(names, []string{h.String()}) {
		t.Fatalf("data/ = %v, want just %s", names, h)
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ keeps %v after dedup stores", left)
	}
}

func TestStoreDedupRefreshesMtime(t *testing.T) {
	// gc's grace period protects a blob stored again, about to be labelled.
	s, dir := newStore(t)
	h := mustStore(t, s, "old blob")
	old := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(blobPath(dir, h), old, old); err != nil {
		t.Fatal(err)
	}
	mustStore(t, s, "old blob")
	fi, err := os.Stat(blobPath(dir, h))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(fi.ModTime()) > time.Hour {
		t.Fatalf("mtime of re-stored blob is %v, want refreshed to now", fi.ModTime())
	}
}

func TestLabel(t *testing.T) {
	s, dir := newStore(t)
	h1 := mustStore(t, s, "one")
	h2 := mustStore(t, s, "two")
	h3 := mustStore(t, s, "three")

	// The blob must exist; nothing is created otherwise.
	err := s.Label(bg, "x", shaStr("missing"))
	wantErr(t, "Label(missing blob)", err, store.ErrNotFound)
	if labelFileExists(dir, "x") {
		t.Fatal("Label of a missing blob created the label file")
	}

	mustLabel(t, s, "x", h1)
	mustLabel(t, s, "x", h2)
	mustLabel(t, s, "x", h1) // no duplicate
	mustLabel(t, s, "x", h2)
	mustLabel(t, s, "x", h3)
	wantRefs(t, s, "x", h1, h2, h3) // oldest first
	if got, want := labelFile(t, dir, "x"), joinRefs(h1, h2, h3); !bytes.Equal(got, want) {
		t.Fatalf("label file = %q, want %q", got, want)
	}

	_, err = s.GetByLabel(bg, "nope")
	wantErr(t, "GetByLabel(missing)", err, store.ErrNotFound)
	_, err = s.GetByLabel(bg, "x/below-a-label")
	wantErr(t, "GetByLabel(below a label)", err, store.ErrNotFound)
}

func TestRemoveLabel(t *testing.T) {
	s, dir := newStore(t)
	h := mustStore(t, s, "kept")
	mustLabel(t, s, "a", h)
	mustLabel(t, s, "ns/b", h)

	if err := s.RemoveLabel(bg, "a"); err != nil {
		t.Fatalf("RemoveLabel: %v", err)
	}
	if labelFileExists(dir, "a") {
		t.Fatal("label file still there")
	}
	if ok, _ := s.Exists(bg, h); !ok {
		t.Fatal("RemoveLabel removed the blob; it must stay until gc")
	}
	wantErr(t, "RemoveLabel again", s.RemoveLabel(bg, "a"), store.ErrNotFound)
	wantErr(t, "RemoveLabel(namespace)", s.RemoveLabel(bg, "ns"), store.ErrIsNamespace)
	wantRefs(t, s, "ns/b", h)
}

func TestRemoveFromLabel(t *testing.T) {
	s, dir := newStore(t)
	h1, h2, h3 := mustStore(t, s, "1"), mustStore(t, s, "2"), mustStore(t, s, "3")
	for _, h := range []store.Hash{h1, h2, h3} {
		mustLabel(t, s, "team/x", h)
	}

	if err := s.RemoveFromLabel(bg, "team/x", h2); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "team/x", h1, h3)
	if got, want := labelFile(t, dir, "team/x"), joinRefs(h1, h3); !bytes.Equal(got, want) {
		t.Fatalf("label file = %q, want %q", got, want)
	}
	wantErr(t, "RemoveFromLabel(ref not in label)", s.RemoveFromLabel(bg, "team/x", h2), store.ErrNotFound)
	wantErr(t, "RemoveFromLabel(missing label)", s.RemoveFromLabel(bg, "nope", h1), store.ErrNotFound)

	if err := s.RemoveFromLabel(bg, "team/x", h1); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveFromLabel(bg, "team/x", h3); err != nil {
		t.Fatal(err)
	}
	if labelFileExists(dir, "team/x") {
		t.Fatal("emptied label was not deleted")
	}
	_, err := s.GetByLabel(bg, "team/x")
	wantErr(t, "GetByLabel(emptied)", err, store.ErrNotFound)
	labels, err := s.ListLabels(bg)
	if err != nil || len(labels) != 0 {
		t.Fatalf("ListLabels = %v, %v; want none", labels, err)
	}
	for _, h := range []store.Hash{h1, h2, h3} {
		if ok, _ := s.Exists(bg, h); !ok {
			t.Fatalf("blob %s removed with its ref", h)
		}
	}
}

func TestPutAtLabel(t *testing.T) {
	s, dir := newStore(t)
	h1, err := s.PutAtLabel(bg, "log", []byte("first"))
	if err != nil {
		t.Fatal(err)
	}
	h2, err := s.PutAtLabel(bg, "log", []byte("second"))
	if err != nil {
		t.Fatal(err)
	}
	if h1 != shaStr("first") || h2 != shaStr("second") {
		t.Fatalf("PutAtLabel hashes %s %s are not the contents' SHA-1", h1, h2)
	}
	if _, err := s.PutAtLabel(bg, "log", []byte("first")); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "log", h1, h2)
	if got, want := labelFile(t, dir, "log"), joinRefs(h1, h2); !bytes.Equal(got, want) {
		t.Fatalf("label file = %q, want %q", got, want)
	}
	if b, _ := s.Get(bg, h2); string(b) != "second" {
		t.Fatalf("Get = %q", b)
	}
}

func TestReplaceContentAtLabel(t *testing.T) {
	s, dir := newStore(t)
	h1, _ := s.PutAtLabel(bg, "doc", []byte("v1"))
	h2, _ := s.PutAtLabel(bg, "doc", []byte("v2"))
	wantRefs(t, s, "doc", h1, h2)

	h3, err := s.ReplaceContentAtLabel(bg, "doc", []byte("v3"))
	if err != nil {
		t.Fatal(err)
	}
	if h3 != shaStr("v3") {
		t.Fatalf("hash %s", h3)
	}
	wantRefs(t, s, "doc", h3)
	if got := labelFile(t, dir, "doc"); string(got) != h3.String() {
		t.Fatalf("label file = %q, want exactly the hash, no newline", got)
	}
	// On a new label it creates it, nested too.
	h4, err := s.ReplaceContentAtLabel(bg, "new/nested/doc", []byte("v4"))
	if err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "new/nested/doc", h4)
	// The replaced blobs stay.
	for _, h := range []store.Hash{h1, h2} {
		if ok, _ := s.Exists(bg, h); !ok {
			t.Fatalf("replaced blob %s was removed", h)
		}
	}
}

func TestReplaceAtLabel(t *testing.T) {
	s, dir := newStore(t)
	h1, h2 := mustStore(t, s, "a"), mustStore(t, s, "b")
	mustLabel(t, s, "l", h1)
	mustLabel(t, s, "l", h2)

	err := s.ReplaceAtLabel(bg, "l", shaStr("missing"))
	wantErr(t, "ReplaceAtLabel(missing blob)", err, store.ErrNotFound)
	wantRefs(t, s, "l", h1, h2)
	wantErr(t, "ReplaceAtLabel(new label, missing blob)", s.ReplaceAtLabel(bg, "other", shaStr("missing")), store.ErrNotFound)
	if labelFileExists(dir, "other") {
		t.Fatal("ReplaceAtLabel of a missing blob created a label")
	}

	if err := s.ReplaceAtLabel(bg, "l", h1); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "l", h1)
	if err := s.ReplaceAtLabel(bg, "fresh", h2); err != nil {
		t.Fatal(err)
	}
	wantRefs(t, s, "fresh", h2)
}

func TestListLabels(t *testing.T) {
	s, _ := newStore(t)
	h := mustStore(t, s, "x")
	names := []string{
		"zeta", "alpha", "team/alpha/notes", "team/beta", "a1b2c3:chain-head",
		"actor:0a1b", "release: v1 final", "ünïcödé/ß", "deep/er/and/deeper/label",
	}
	for _, n := range names {
		mustLabel(t, s, n, h)
	}
	if err := s.MakeNamespace(bg, "empty-namespace/inner"); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListLabels(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ListLabels = %q\nwant %q", got, want)
	}
}

func TestListAllContentAndTotalSize(t *testing.T) {
	s, dir := newStore(t)
	contents := []string{"", "a", "bb", "some longer content here", strings.Repeat("z", 70000)}
	var hashes []store.Hash
	var total int64
	for _, c := range contents {
		hashes = append(hashes, mustStore(t, s, c))
		total += int64(len(c))
	}
	// Files that are not blobs are not content.
	for _, stray := range []string{"README", strings.ToUpper(shaStr("x").String()), shaStr("y").String() + ".tmp"} {
		if err := os.WriteFile(filepath.Join(dir, store.DataDir, stray), []byte("not a blob, 29 bytes of junk."), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, store.DataDir, shaStr("dir").String()), 0o755); err != nil {
		t.Fatal(err)
	}

	got, err := s.ListAllContent(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := sortHashes(hashes); !slices.Equal(got, want) {
		t.Fatalf("ListAllContent = %v, want %v", got, want)
	}
	size, err := s.CalculateTotalSize(bg)
	if err != nil {
		t.Fatal(err)
	}
	if size != total {
		t.Fatalf("CalculateTotalSize = %d, want %d", size, total)
	}
}

func TestListAllContentManyBlobs(t *testing.T) {
	// 5000 blobs: more than one 4096-entry batch of the directory scan.
	s, dir := newStore(t)
	var want []store.Hash
	for i := range 5000 {
		c := []byte("blob " + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + itoa(i))
		h := sha(c)
		if err := os.WriteFile(blobPath(dir, h), c, 0o644); err != nil {
			t.Fatal(err)
		}
		want = append(want, h)
	}
	got, err := s.ListAllContent(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, sortHashes(want)) {
		t.Fatalf("ListAllContent returned %d hashes, want %d", len(got), len(want))
	}
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func TestResolveReference(t *testing.T) {
	s, _ := newStore(t)
	single, _ := s.PutAtLabel(bg, "single", []byte("only one"))
	s.PutAtLabel(bg, "multi", []byte("m1"))
	s.PutAtLabel(bg, "multi", []byte("m2"))
	s.PutAtLabel(bg, "team/beta", []byte("nested"))
	s.PutAtLabel(bg, "actor:abc", []byte("colon"))
	file := filepath.Join(t.TempDir(), "plain file")
	if err := os.WriteFile(file, []byte("from a file"), 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		ref     string
		want    string
		wantErr error
	}{
		{ref: "store:hash:" + single.String(), want: "only one"},
		{ref: "store:hash:" + shaStr("missing").String(), wantErr: store.ErrNotFound},
		{ref: "store:hash:XYZ", wantErr: store.ErrInvalidHash},
		{ref: "store:hash:" + strings.ToUpper(single.String()), wantErr: store.ErrInvalidHash},
		{ref: "store:single", want: "only one"},
		{ref: "store:multi", wantErr: store.ErrAmbiguous},
		{ref: "store:missing", wantErr: store.ErrNotFound},
		{ref: "store:team/beta", want: "nested"},
		{ref: "store:actor:abc", want: "colon"},
		{ref: "store:../escape", wantErr: store.ErrInvalidLabel},
		{ref: "store:", wantErr: store.ErrInvalidLabel},
		{ref: file, want: "from a file"},
		{ref: filepath.Join(t.TempDir(), "nope"), wantErr: fs.ErrNotExist},
	}
	for _, c := range cases {
		t.Run(c.ref, func(t *testing.T) {
			got, err := s.ResolveReference(bg, c.ref)
			if c.wantErr != nil {
				wantErr(t, "ResolveReference", err, c.wantErr)
				return
			}
			if err != nil {
				t.Fatalf("ResolveReference: %v", err)
			}
			if string(got) != c.want {
				t.Fatalf("ResolveReference = %q, want %q", got, c.want)
			}
			r, err := s.OpenReference(bg, c.ref)
			if err != nil {
				t.Fatalf("OpenReference: %v", err)
			}
			b, err := io.ReadAll(r)
			r.Close()
			if err != nil || string(b) != c.want {
				t.Fatalf("OpenReference read %q, %v; want %q", b, err, c.want)
			}
		})
	}
}

func TestParseReference(t *testing.T) {
	cases := []struct {
		ref  string
		kind store.RefKind
		arg  string
	}{
		{"store:hash:abc", store.RefHash, "abc"},
		{"store:hash:", store.RefHash, ""},
		{"store:label", store.RefLabel, "label"},
		{"store:a:b:c", store.RefLabel, "a:b:c"},
		{"store:", store.RefLabel, ""},
		{"store:hashes", store.RefLabel, "hashes"},
		{"/tmp/file", store.RefPath, "/tmp/file"},
		{"relative/store:x", store.RefPath, "relative/store:x"},
		{"Store:x", store.RefPath, "Store:x"},
		{"", store.RefPath, ""},
	}
	for _, c := range cases {
		kind, arg := store.ParseReference(c.ref)
		if kind != c.kind || arg != c.arg {
			t.Errorf("ParseReference(%q) = %v, %q; want %v, %q", c.ref, kind, arg, c.kind, c.arg)
		}
	}
}

func TestRenameLabel(t *testing.T) {
	base := func(t *testing.T, s *store.Store, h1, h2 store.Hash) {
		mustLabel(t, s, "a", h1)
		mustLabel(t, s, "b", h2)
		mustLabel(t, s, "team/alpha", h1)
		mustLabel(t, s, "team/beta/x", h2)
		mustLabel(t, s, "other/y", h2)
		if err := s.MakeNamespace(bg, "emptyns"); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name     string
		from, to string
		wantErr  error
		labels   []string // expected ListLabels afterwards (on success)
		check    func(t *testing.T, s *store.Store, h1, h2 store.Hash)
	}{
		{
			name: "to a new name", from: "a", to: "c",
			labels: []string{"b", "c", "other/y", "team/alpha", "team/beta/x"},
			check:  func(t *testing.T, s *store.Store, h1, h2 store.Hash) { wantRefs(t, s, "c", h1) },
		},
		{
			name: "over an existing label", from: "a", to: "b",
			labels: []string{"b", "other/y", "team/alpha", "team/beta/x"},
			check:  func(t *testing.T, s *store.Store, h1, h2 store.Hash) { wantRefs(t, s, "b", h1) },
		},
		{
			name: "into new namespaces", from: "a", to: "x/y/z",
			labels: []string{"b", "other/y", "team/alpha", "team/beta/x", "x/y/z"},
			check:  func(t *testing.T, s *store.Store, h1, h2 store.Hash) { wantRefs(t, s, "x/y/z", h1) },
		},
		{
			name: "out of a namespace", from: "team/alpha", to: "alpha",
			labels: []string{"a", "alpha", "b", "other/y", "team/beta/x"},
		},
		{
			name: "a namespace", from: "team", to: "squad",
			labels: []string{"a", "b", "other/y", "squad/alpha", "squad/beta/x"},
			check: func(t *testing.T, s *store.Store, h1, h2 store.Hash) {
				wantRefs(t, s, "squad/beta/x", h2)
				_, err := s.GetByLabel(bg, "team/alpha")
				wantErr(t, "old name", err, store.ErrNotFound)
			},
		},
		{
			name: "a namespace over an empty namespace", from: "team", to: "emptyns",
			labels: []string{"a", "b", "emptyns/alpha", "emptyns/beta/x", "other/y"},
		},
		{name: "missing source", from: "nope", to: "c", wantErr: store.ErrNotFound},
		{name: "label over a namespace", from: "a", to: "team", wantErr: store.ErrIsNamespace},
		{name: "namespace over a label", from: "team", to: "a", wantErr: store.ErrNotNamespace},
		{name: "namespace into itself", from: "team", to: "team/sub", wantErr: store.ErrInvalidLabel},
		{name: "namespace over a non-empty namespace", from: "team", to: "other", wantErr: store.ErrNotEmpty},
		{name: "below a label", from: "a", to: "b/c", wantErr: store.ErrNotNamespace},
		{name: "invalid target", from: "a", to: "../a", wantErr: store.ErrInvalidLabel},
		{name: "invalid source", from: "a/../b", to: "c", wantErr: store.ErrInvalidLabel},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, dir := newStore(t)
			h1, h2 := mustStore(t, s, "one"), mustStore(t, s, "two")
			base(t, s, h1, h2)
			before := treeSnapshot(t, filepath.Join(dir, store.LabelsDir))
			err := s.RenameLabel(bg, c.from, c.to)
			if c.wantErr != nil {
				wantErr(t, "RenameLabel", err, c.wantErr)
				if d := diffSnapshots(before, treeSnapshot(t, filepath.Join(dir, store.LabelsDir))); len(d) != 0 {
					t.Fatalf("failed rename changed labels/: %v", d)
				}
				return
			}
			if err != nil {
				t.Fatalf("RenameLabel: %v", err)
			}
			got, err := s.ListLabels(bg)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.labels) {
				t.Fatalf("ListLabels = %q, want %q", got, c.labels)
			}
			if c.check != nil {
				c.check(t, s, h1, h2)
			}
		})
	}
}

func TestNamespaces(t *testing.T) {
	s, dir := newStore(t)
	h := mustStore(t, s, "x")
	mustLabel(t, s, "lbl", h)

	if err := s.MakeNamespace(bg, "ns"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, store.LabelsDir, "ns")); err != nil || !fi.IsDir() {
		t.Fatalf("labels/ns is not a directory: %v", err)
	}
	if ok, err := s.IsNamespace(bg, "ns"); err != nil || !ok {
		t.Fatalf("IsNamespace(ns) = %v, %v", ok, err)
	}
	if ok, err := s.IsNamespace(bg, "lbl"); err != nil || ok {
		t.Fatalf("IsNamespace(lbl) = %v, %v", ok, err)
	}
	_, err := s.IsNamespace(bg, "nope")
	wantErr(t, "IsNamespace(missing)", err, store.ErrNotFound)

	wantErr(t, "MakeNamespace(existing namespace)", s.MakeNamespace(bg, "ns"), store.ErrExists)
	wantErr(t, "MakeNamespace(existing label)", s.MakeNamespace(bg, "lbl"), store.ErrExists)
	wantErr(t, "MakeNamespace(below a label)", s.MakeNamespace(bg, "lbl/sub"), store.ErrNotNamespace)
	wantErr(t, "MakeNamespace(invalid)", s.MakeNamespace(bg, "a//b"), store.ErrInvalidLabel)

	if err := s.MakeNamespace(bg, "deep/er/est"); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"deep", "deep/er", "deep/er/est"} {
		if ok, err := s.IsNamespace(bg, n); err != nil || !ok {
			t.Fatalf("IsNamespace(%s) = %v, %v", n, ok, err)
		}
	}

	mustLabel(t, s, "ns/inside", h)
	wantErr(t, "RemoveNamespace(not empty)", s.RemoveNamespace(bg, "ns"), store.ErrNotEmpty)
	wantErr(t, "RemoveNamespace(label)", s.RemoveNamespace(bg, "lbl"), store.ErrNotNamespace)
	wantErr(t, "RemoveNamespace(missing)", s.RemoveNamespace(bg, "nope"), store.ErrNotFound)
	wantErr(t, "RemoveNamespace(invalid)", s.RemoveNamespace(bg, "/abs"), store.ErrInvalidLabel)
	wantRefs(t, s, "ns/inside", h)

	if err := s.RemoveLabel(bg, "ns/inside"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveNamespace(bg, "ns"); err != nil {
		t.Fatalf("RemoveNamespace(empty): %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, store.LabelsDir, "ns")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("labels/ns still there: %v", err)
	}
	wantErr(t, "RemoveNamespace(non-empty parent)", s.RemoveNamespace(bg, "deep"), store.ErrNotEmpty)
	if err := s.RemoveNamespace(bg, "deep/er/est"); err != nil {
		t.Fatal(err)
	}
}

func TestReadNamespace(t *testing.T) {
	s, dir := newStore(t)
	h := mustStore(t, s, "x")
	for _, n := range []string{"b", "a", "team/z", "team/y/deep", "c:d"} {
		mustLabel(t, s, n, h)
	}
	if err := s.MakeNamespace(bg, "empty"); err != nil {
		t.Fatal(err)
	}
	// Odd entries are skipped: a symlink and a FIFO.
	if err := os.Symlink("b", filepath.Join(dir, store.LabelsDir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := mkfifo(filepath.Join(dir, store.LabelsDir, "fifo")); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		ns      string
		want    []store.LabelEntry
		wantErr error
	}{
		{ns: "", want: []store.LabelEntry{{"a", false}, {"b", false}, {"c:d", false}, {"empty", true}, {"team", true}}},
		{ns: "team", want: []store.LabelEntry{{"y", true}, {"z", false}}},
		{ns: "team/y", want: []store.LabelEntry{{"deep", false}}},
		{ns: "empty", want: []store.LabelEntry{}},
		{ns: "a", wantErr: store.ErrNotNamespace},
		{ns: "nope", wantErr: store.ErrNotFound},
		{ns: "../x", wantErr: store.ErrInvalidLabel},
	}
	for _, c := range cases {
		got, err := s.ReadNamespace(bg, c.ns)
		if c.wantErr != nil {
			wantErr(t, "ReadNamespace("+c.ns+")", err, c.wantErr)
			continue
		}
		if err != nil {
			t.Fatalf("ReadNamespace(%q): %v", c.ns, err)
		}
		if !slices.Equal(got, c.want) {
			t.Fatalf("ReadNamespace(%q) = %v, want %v", c.ns, got, c.want)
		}
	}
	labels, err := s.ListLabels(bg)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "c:d", "team/y/deep", "team/z"}; !slices.Equal(labels, want) {
		t.Fatalf("ListLabels = %q, want %q", labels, want)
	}
}

func TestStatLabel(t *testing.T) {
	s, dir := newStore(t)
	h1, _ := s.PutAtLabel(bg, "ns/l", []byte("1"))
	h2, _ := s.PutAtLabel(bg, "ns/l", []byte("2"))
	when := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	if err := os.Chtimes(filepath.Join(dir, store.LabelsDir, "ns", "l"), when, when); err != nil {
		t.Fatal(err)
	}
	li, err := s.StatLabel(bg, "ns/l")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(li.Refs, []store.Hash{h1, h2}) {
		t.Fatalf("Refs = %v", li.Refs)
	}
	if !li.ModTime.Equal(when) {
		t.Fatalf("ModTime = %v, want %v", li.ModTime, when)
	}
	if head, ok := li.Head(); !ok || head != h2 {
		t.Fatalf("Head = %s, %v; want the newest ref %s", head, ok, h2)
	}
	if _, ok := (store.LabelInfo{}).Head(); ok {
		t.Fatal("Head of no refs reports ok")
	}
	_, err = s.StatLabel(bg, "ns/missing")
	wantErr(t, "StatLabel(missing)", err, store.ErrNotFound)
	_, err = s.StatLabel(bg, "ns")
	wantErr(t, "StatLabel(namespace)", err, store.ErrIsNamespace)
}

func TestOpenAndStat(t *testing.T) {
	s, dir := newStore(t)
	content := bytes.Repeat([]byte("stream me "), 100000)
	h, err := s.Store(bg, content)
	if err != nil {
		t.Fatal(err)
	}
	f, bi, err := s.Open(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := os.Lstat(blobPath(dir, h))
	if err != nil {
		t.Fatal(err)
	}
	if bi.Size != int64(len(content)) || !bi.ModTime.Equal(fi.ModTime()) || bi.Ino != inode(t, blobPath(dir, h)) {
		t.Fatalf("BlobInfo = %+v, want size %d mtime %v ino %d", bi, len(content), fi.ModTime(), inode(t, blobPath(dir, h)))
	}
	// Read it in small pieces, as a file system would.
	var got bytes.Buffer
	if _, err := io.CopyBuffer(&got, f, make([]byte, 4093)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), content) {
		t.Fatal("streamed content differs")
	}
	if _, err := f.Write([]byte("x")); err == nil {
		t.Fatal("the blob file handed out is writable")
	}

	st, err := s.Stat(bg, h)
	if err != nil {
		t.Fatal(err)
	}
	if st != bi {
		t.Fatalf("Stat = %+v, Open said %+v", st, bi)
	}
	_, err = s.Stat(bg, shaStr("missing"))
	wantErr(t, "Stat(missing)", err, store.ErrNotFound)
	_, _, err = s.Open(bg, shaStr("missing"))
	wantErr(t, "Open(missing)", err, store.ErrNotFound)
}
