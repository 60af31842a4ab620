package store

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
)

// After the store closes its verdict log, a late verdict (from a reader
// that got its file just before Close) is kept in memory only: the log is
// not reopened, so no descriptor leaks past Close.
func TestVerdictCacheRecordAfterClose(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "verified")
	blob := filepath.Join(dir, "blob")
	if err := os.WriteFile(blob, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(blob)
	if err != nil {
		t.Fatal(err)
	}
	vc := newVerdictCache(logPath, false, slog.New(slog.DiscardHandler))
	var h1, h2 Hash
	h1[0], h2[0] = 1, 2
	vc.record(h1, fi, true)
	if vc.out == nil {
		t.Fatal("the first verdict did not open the log")
	}
	vc.close()
	vc.record(h2, fi, true)
	if vc.out != nil {
		vc.out.Close()
		t.Fatal("a verdict recorded after close reopened the log")
	}
	if ok, known := vc.lookup(h2, fi); !ok || !known {
		t.Fatal("the late verdict is not kept in memory")
	}
	b, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(b); got == 0 || b[0] != '0' || b[1] != '1' {
		t.Fatalf("log = %q, want only the first verdict", b)
	}
	if n := verdictTestCountLines(b); n != 1 {
		t.Fatalf("log has %d records, want 1", n)
	}
}

func verdictTestCountLines(b []byte) int {
	n := 0
	for _, c := range b {
		if c == '\n' {
			n++
		}
	}
	return n
}
