package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProgressSilentWhenPiped: fsck and gc draw no progress bar when their
// output is not a terminal: stderr holds the one summary line and nothing
// else, and stdout only the report.
func TestProgressSilentWhenPiped(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	content := filepath.Join(t.TempDir(), "f")
	os.WriteFile(content, bytes.Repeat([]byte("x"), 1<<20), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"tsfs", "--store", dir, "put", "--label", "l", content}, nil, &out, &errb); code != 0 {
		t.Fatalf("put: exit %d: %s", code, errb.String())
	}
	if errb.Len() != 0 {
		t.Errorf("put wrote to stderr when piped: %q", errb.String())
	}
	for _, args := range [][]string{{"fsck"}, {"gc", "--dry-run"}} {
		out.Reset()
		errb.Reset()
		if code := run(append([]string{"tsfs", "--store", dir}, args...), nil, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		lines := strings.Split(strings.TrimRight(errb.String(), "\n"), "\n")
		if len(lines) != 1 || strings.ContainsAny(errb.String(), "\r\x1b") {
			t.Errorf("%v wrote more than its summary line to a pipe: %q", args, errb.String())
		}
	}
}
