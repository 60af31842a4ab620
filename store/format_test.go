package store_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/theater-storefs/theater-storefs/store"
)

func TestParseLabelFile(t *testing.T) {
	h1, h2, h3 := shaStr("1"), shaStr("2"), shaStr("3")
	s1, s2, s3 := h1.String(), h2.String(), h3.String()
	cases := []struct {
		name string
		in   string
		refs []store.Hash
		bad  []int
	}{
		{"empty file", "", nil, nil},
		{"one ref", s1, []store.Hash{h1}, nil},
		{"Theater format", s1 + "\n" + s2 + "\n" + s3, []store.Hash{h1, h2, h3}, nil},
		{"trailing newline", s1 + "\n" + s2 + "\n", []store.Hash{h1, h2}, nil},
		{"CRLF", s1 + "\r\n" + s2 + "\r\n", []store.Hash{h1, h2}, nil},
		{"blank lines", "\n\n" + s1 + "\n\n\n" + s2 + "\n\n", []store.Hash{h1, h2}, nil},
		{"surrounding spaces and tabs", "  " + s1 + "\t\n\t" + s2 + "  ", []store.Hash{h1, h2}, nil},
		{"only blank lines", "\n\r\n  \n", nil, nil},
		{"duplicates kept as written", s1 + "\n" + s1, []store.Hash{h1, h1}, nil},
		{"garbage line", s1 + "\nnot a hash\n" + s2, []store.Hash{h1, h2}, []int{2}},
		{"uppercase is not a hash", strings.ToUpper(s1) + "\n" + s2, []store.Hash{h2}, []int{1}},
		{"39 chars", s1[:39] + "\n" + s2, []store.Hash{h2}, []int{1}},
		{"41 chars", s1 + "0\n" + s2, []store.Hash{h2}, []int{1}},
		{"two hashes on a line", s1 + " " + s2, nil, []int{1}},
		{"line numbers count blank lines", "\n\nxx\n" + s3 + "\nyy", []store.Hash{h3}, []int{3, 5}},
		{"NUL bytes", s1 + "\x00\n" + s2, []store.Hash{h2}, []int{1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			refs, bad := store.ParseLabelFile([]byte(c.in))
			if !slices.Equal(refs, c.refs) || !slices.Equal(bad, c.bad) {
				t.Fatalf("ParseLabelFile(%q) = %v, %v; want %v, %v", c.in, refs, bad, c.refs, c.bad)
			}
		})
	}
}

func TestFormatLabelFile(t *testing.T) {
	h1, h2 := shaStr("1"), shaStr("2")
	if got := store.FormatLabelFile(nil); len(got) != 0 {
		t.Fatalf("FormatLabelFile(nil) = %q", got)
	}
	if got := store.FormatLabelFile([]store.Hash{h1}); string(got) != h1.String() {
		t.Fatalf("one ref: %q", got)
	}
	if got, want := store.FormatLabelFile([]store.Hash{h1, h2}), h1.String()+"\n"+h2.String(); string(got) != want {
		t.Fatalf("two refs: %q, want %q", got, want)
	}
}

// Label files we write are exactly Theater's: refs joined by "\n", no
// trailing newline; files with Theater's or an editor's quirks read fine and
// are rewritten canonically on the next change.
func TestLabelFileBytes(t *testing.T) {
	s, dir := newStore(t)
	h1, h2, h3 := mustStore(t, s, "1"), mustStore(t, s, "2"), mustStore(t, s, "3")
	writeRaw := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, store.LabelsDir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	cases := []struct {
		name string
		raw  string
	}{
		{"trailing-newline", h1.String() + "\n" + h2.String() + "\n"},
		{"crlf", h1.String() + "\r\n" + h2.String() + "\r\n"},
		{"blank-lines", "\n" + h1.String() + "\n\n\n" + h2.String() + "\n\n"},
		{"theater", h1.String() + "\n" + h2.String()},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			writeRaw(c.name, c.raw)
			wantRefs(t, s, c.name, h1, h2)
			mustLabel(t, s, c.name, h3)
			if got, want := labelFile(t, dir, c.name), joinRefs(h1, h2, h3); !bytes.Equal(got, want) {
				t.Fatalf("after Label: file = %q, want %q", got, want)
			}
			if err := s.RemoveFromLabel(bg, c.name, h1); err != nil {
				t.Fatal(err)
			}
			if got, want := labelFile(t, dir, c.name), joinRefs(h2, h3); !bytes.Equal(got, want) {
				t.Fatalf("after RemoveFromLabel: file = %q, want %q", got, want)
			}
		})
	}
}

func TestGarbageLabelLines(t *testing.T) {
	s, dir := newStore(t)
	h1, h2, h3 := mustStore(t, s, "1"), mustStore(t, s, "2"), mustStore(t, s, "3")
	raw := h1.String() + "\nnot a hash, maybe a merge conflict\n" + h2.String() + "\n"
	p := filepath.Join(dir, store.LabelsDir, "g")
	if err := os.WriteFile(p, []byte(raw), 0o644); err != nil {
		t.Fatal(err)
	}

	// Reads skip the garbage.
	wantRefs(t, s, "g", h1, h2)
	li, err := s.StatLabel(bg, "g")
	if err != nil || !slices.Equal(li.Refs, []store.Hash{h1, h2}) {
		t.Fatalf("StatLabel = %v, %v", li.Refs, err)
	}

	if li.Bad != 1 || li.Corrupt("g") != nil {
		t.Fatalf("StatLabel: %d bad lines, Corrupt %v; want 1, nil", li.Bad, li.Corrupt("g"))
	}

	// A label with no line that is a hash has no refs to give: corrupt,
	// not empty.
	if err := os.WriteFile(filepath.Join(dir, store.LabelsDir, "nothing"), []byte("this is not a hash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetByLabel(bg, "nothing")
	wantErr(t, "GetByLabel of a label with no hash", err, store.ErrCorrupt)
	_, err = s.ResolveLabel(bg, "nothing")
	wantErr(t, "ResolveLabel of a label with no hash", err, store.ErrCorrupt)
	if li, err := s.StatLabel(bg, "nothing"); err != nil || li.Bad != 1 || !errors.Is(li.Corrupt("nothing"), store.ErrCorrupt) {
		t.Fatalf("StatLabel of a label with no hash = %+v, %v; want 1 bad line and Corrupt", li, err)
	}

	// Changes that would rewrite the file, dropping the garbage silently,
	// are refused.
	wantErr(t, "Label", s.Label(bg, "g", h3), store.ErrCorrupt)
	wantErr(t, "RemoveFromLabel", s.RemoveFromLabel(bg, "g", h1), store.ErrCorrupt)
	_, err = s.PutAtLabel(bg, "g", []byte("4"))
	wantErr(t, "PutAtLabel", err, store.ErrCorrupt)
	if got := labelFile(t, dir, "g"); string(got) != raw {
		t.Fatalf("refused changes modified the label: %q", got)
	}

	rep, err := s.Verify(bg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !hasProblem(rep, "bad-label", "g") {
		t.Fatalf("Verify did not report the garbage label: %v", rep.Problems)
	}

	// Replacing repairs it.
	if err := s.ReplaceAtLabel(bg, "g", h3); err != nil {
		t.Fatalf("ReplaceAtLabel: %v", err)
	}
	if got := labelFile(t, dir, "g"); string(got) != h3.String() {
		t.Fatalf("repaired label file = %q", got)
	}
	mustLabel(t, s, "g", h1)
	wantRefs(t, s, "g", h3, h1)
}

func TestValidateLabel(t *testing.T) {
	comp255 := strings.Repeat("c", 255)
	// 40 components of 99 bytes, each with its '/', then 96 bytes: 4096.
	long4096 := strings.Repeat(strings.Repeat("c", 99)+"/", 40) + strings.Repeat("c", 96)
	if len(long4096) != store.MaxLabelLen {
		t.Fatalf("test name is %d bytes", len(long4096))
	}
	cases := []struct {
		name string
		ok   bool
	}{
		{"", false},
		{"/", false},
		{"/abs", false},
		{"a//b", false},
		{"a/", false},
		{".", false},
		{"..", false},
		{"../x", false},
		{"x/..", false},
		{"x/../y", false},
		{"./x", false},
		{"x/./y", false},
		{"a\x00b", false},
		{"\x00", false},
		{strings.Repeat("c", 256), false},
		{"ok/" + strings.Repeat("c", 256), false},
		{long4096, true},        // 4096 bytes
		{long4096 + "x", false}, // 4097 bytes
		{comp255, true},
		{"plain", true},
		{"a1b2c3d4-0000-4000-8000-000000000000:chain-head", true},
		{"actor:a1b2c3d4-0000-4000-8000-000000000000", true},
		{"release: v1 final", true},
		{" leading and trailing spaces ", true},
		{"ünïcödé/日本語", true},
		{"...", true},
		{".hidden", true},
		{"..x", true},
		{"a\\b", true},
		{"new\nline", true},
		{"\xff\xfe invalid utf-8", true},
		{"team/alpha/notes", true},
	}
	for _, c := range cases {
		err := store.ValidateLabel(c.name)
		if c.ok && err != nil {
			t.Errorf("ValidateLabel(%.60q) = %v, want ok", c.name, err)
		}
		if !c.ok {
			wantErrNoFatal(t, c.name, err)
		}
	}
}

func wantErrNoFatal(t *testing.T, name string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrInvalidLabel) {
		t.Errorf("ValidateLabel(%.60q) = %v, want ErrInvalidLabel", name, err)
	}
}

// Every operation taking a label name refuses a hostile one, and nothing is
// written outside the store whatever the name.
func TestHostileLabelNames(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	s := openAt(t, dir, store.Options{})
	h := mustStore(t, s, "payload")
	mustLabel(t, s, "existing", h)
	for _, f := range []string{"victim", "x"} {
		if err := os.WriteFile(filepath.Join(parent, f), []byte("outside the store"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(parent, "outdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := func() map[string]string { return snapshotOutside(t, parent, "store") }
	before := outside()
	labelsBefore := treeSnapshot(t, filepath.Join(dir, store.LabelsDir))

	hostile := []string{
		"", "/", "/victim", "/" + parent + "/x", "..", "../victim", "../../victim",
		"../outdir/x", "x/../../victim", "a//b", ".", "./x", "x/.", "a\x00b",
		"../store/labels/sneaky", strings.Repeat("c", 256), strings.Repeat("a/", 2049),
	}
	for _, name := range hostile {
		ops := map[string]error{}
		ops["Label"] = s.Label(bg, name, h)
		_, ops["PutAtLabel"] = s.PutAtLabel(bg, name, []byte("x"))
		_, ops["ReplaceContentAtLabel"] = s.ReplaceContentAtLabel(bg, name, []byte("x"))
		ops["ReplaceAtLabel"] = s.ReplaceAtLabel(bg, name, h)
		_, _, ops["PutLabeled"] = s.PutLabeled(bg, strings.NewReader("y"), name, store.LabelReplace)
		ops["RenameLabel to"] = s.RenameLabel(bg, "existing", name)
		ops["RenameLabel from"] = s.RenameLabel(bg, name, "new")
		ops["MakeNamespace"] = s.MakeNamespace(bg, name)
		ops["RemoveNamespace"] = s.RemoveNamespace(bg, name)
		ops["RemoveLabel"] = s.RemoveLabel(bg, name)
		ops["RemoveFromLabel"] = s.RemoveFromLabel(bg, name, h)
		_, ops["GetByLabel"] = s.GetByLabel(bg, name)
		_, ops["StatLabel"] = s.StatLabel(bg, name)
		_, ops["IsNamespace"] = s.IsNamespace(bg, name)
		_, ops["ResolveReference"] = s.ResolveReference(bg, "store:"+name)
		if name != "" { // "" is the top namespace for ReadNamespace
			_, ops["ReadNamespace"] = s.ReadNamespace(bg, name)
		}
		sp, err := s.NewSpool()
		if err != nil {
			t.Fatal(err)
		}
		sp.Write([]byte("spooled"))
		_, ops["Spool.Commit"] = sp.Commit(bg, name, store.LabelAppend)
		for op, err := range ops {
			if !errors.Is(err, store.ErrInvalidLabel) {
				t.Errorf("%s(%.40q) = %v, want ErrInvalidLabel", op, name, err)
			}
		}
	}
	if d := diffSnapshots(before, outside()); len(d) != 0 {
		t.Fatalf("hostile names changed things outside the store: %v", d)
	}
	if d := diffSnapshots(labelsBefore, treeSnapshot(t, filepath.Join(dir, store.LabelsDir))); len(d) != 0 {
		t.Fatalf("refused names changed labels/: %v", d)
	}
	// Refused label operations stored nothing either: the spooled contents
	// are not in data/.
	for _, c := range []string{"x", "y", "spooled"} {
		if ok, _ := s.Exists(bg, shaStr(c)); ok {
			t.Errorf("content %q stored by an operation refused for its label", c)
		}
	}
	if left := tmpSpools(t, s, dir); len(left) != 0 {
		t.Fatalf("tmp/ keeps %v", left)
	}
}

// Accepted names with odd bytes stay inside labels/, exactly where their
// name says.
func TestOddButValidLabelNames(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "store")
	s := openAt(t, dir, store.Options{})
	h := mustStore(t, s, "payload")
	names := []string{
		"a1b2c3d4-0000-4000-8000-000000000000:chain-head", "with space", "ünï/cödé",
		"..x", "...", "back\\slash", "new\nline", "\xff\xfe", "tab\there", strings.Repeat("c", 255),
	}
	for _, n := range names {
		mustLabel(t, s, n, h)
		if got := labelFile(t, dir, n); string(got) != h.String() {
			t.Fatalf("label %q: file holds %q", n, got)
		}
	}
	got, err := s.ListLabels(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(names)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ListLabels = %q, want %q", got, want)
	}
	if top := dirNames(t, parent); !slices.Equal(top, []string{"store"}) {
		t.Fatalf("parent of the store holds %v", top)
	}
}

// A label name must not nest under an existing label, nor turn a namespace
// into a label.
func TestLabelNesting(t *testing.T) {
	s, dir := newStore(t)
	h := mustStore(t, s, "x")
	mustLabel(t, s, "leaf", h)
	mustLabel(t, s, "ns/inner", h)
	before := treeSnapshot(t, filepath.Join(dir, store.LabelsDir))

	for _, name := range []string{"leaf/below", "leaf/below/deeper", "ns/inner/below"} {
		wantErr(t, "Label("+name+")", s.Label(bg, name, h), store.ErrNotNamespace)
		_, err := s.PutAtLabel(bg, name, []byte("p"))
		wantErr(t, "PutAtLabel("+name+")", err, store.ErrNotNamespace)
		_, err = s.ReplaceContentAtLabel(bg, name, []byte("p"))
		wantErr(t, "ReplaceContentAtLabel("+name+")", err, store.ErrNotNamespace)
		wantErr(t, "ReplaceAtLabel("+name+")", s.ReplaceAtLabel(bg, name, h), store.ErrNotNamespace)
		wantErr(t, "MakeNamespace("+name+")", s.MakeNamespace(bg, name), store.ErrNotNamespace)
		wantErr(t, "RenameLabel(to "+name+")", s.RenameLabel(bg, "leaf", name), store.ErrNotNamespace)
	}
	for _, name := range []string{"ns"} {
		wantErr(t, "Label("+name+")", s.Label(bg, name, h), store.ErrIsNamespace)
		_, err := s.PutAtLabel(bg, name, []byte("p"))
		wantErr(t, "PutAtLabel("+name+")", err, store.ErrIsNamespace)
		_, err = s.ReplaceContentAtLabel(bg, name, []byte("p"))
		wantErr(t, "ReplaceContentAtLabel("+name+")", err, store.ErrIsNamespace)
		wantErr(t, "ReplaceAtLabel("+name+")", s.ReplaceAtLabel(bg, name, h), store.ErrIsNamespace)
		wantErr(t, "RenameLabel(to "+name+")", s.RenameLabel(bg, "leaf", name), store.ErrIsNamespace)
		_, err = s.GetByLabel(bg, name)
		wantErr(t, "GetByLabel("+name+")", err, store.ErrIsNamespace)
	}
	if d := diffSnapshots(before, treeSnapshot(t, filepath.Join(dir, store.LabelsDir))); len(d) != 0 {
		t.Fatalf("refused nesting changed labels/: %v", d)
	}
}
