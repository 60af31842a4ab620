package main

import (
	"github.com/theater-storefs/theater-storefs/internal/median"
	"strings"
	"testing"
)

const sample = `bench: stores under /tmp (os.TempDir(), ext4)
goos: linux
pkg: github.com/theater-storefs/theater-storefs/store
BenchmarkStore/4KiB-2        	     103	   2274152 ns/op	   1.80 MB/s	       439.7 stores/s
BenchmarkConcurrentStore/group-commit-2         	     408	    300000 ns/op	   6.37 MB/s	      3000 stores/s
BenchmarkConcurrentStore/one-fsync-per-blob-2   	     360	    700000 ns/op	   6.31 MB/s	      1000 stores/s
BenchmarkStore/4KiB-2        	     103	   2000000 ns/op	   2.00 MB/s	       500 stores/s
BenchmarkConcurrentStore/group-commit-2         	     408	    300000 ns/op	   6.37 MB/s	      5000 stores/s
BenchmarkConcurrentStore/one-fsync-per-blob-2   	     360	    700000 ns/op	   6.31 MB/s	      1000 stores/s
BenchmarkConcurrentStore/group-commit-2         	     408	    300000 ns/op	   6.37 MB/s	      4000 stores/s
BenchmarkNoMetric-2 	 10	 1000 ns/op
PASS
`

func TestParseAndReport(t *testing.T) {
	rs, err := parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 4 || rs[0].name != "Store/4KiB" || rs[1].name != groupCommit || rs[3].name != "NoMetric" {
		t.Fatalf("parsed %d results, first %q", len(rs), rs[0].name)
	}
	if got := median.Of(rs[0].values["MB/s"]); got != 1.9 {
		t.Errorf("median of two = %v, want 1.9", got)
	}
	if got, unit := rs[1].rate(); got != 4000 || unit != "stores/s" {
		t.Errorf("group commit rate = %v %s, want 4000 stores/s", got, unit)
	}
	if got, unit := rs[3].rate(); got != 1e6 || unit != "ops/s" {
		t.Errorf("rate from ns/op = %v %s, want 1e6 ops/s", got, unit)
	}
	var out strings.Builder
	report(&out, rs)
	if want := "group commit: 4000 stores/s, one fsync per blob: 1000 stores/s, ratio 4.00 x\n"; !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "note:") {
		t.Errorf("a 4x ratio needs no note:\n%s", out.String())
	}
}

// The paired benchmark's own ratios, when it ran, make the figure.
func TestReportPaired(t *testing.T) {
	rs, err := parse(strings.NewReader(sample + `
BenchmarkGroupCommitPaired-2   	    6000	    200000 ns/op	      2000 fsync-stores/s	      7000 group-stores/s	         3.500 x
BenchmarkGroupCommitPaired-2   	    6000	    200000 ns/op	      2500 fsync-stores/s	      7000 group-stores/s	         2.800 x
BenchmarkGroupCommitPaired-2   	    6000	    200000 ns/op	      2000 fsync-stores/s	      6000 group-stores/s	         3.000 x
`))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	report(&out, rs)
	want := "group commit: 7000 stores/s, one fsync per blob: 2000 stores/s, side by side in each of 3 runs; ratio 3.00 x (median; runs 2.80 to 3.50)\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("report lacks %q:\n%s", want, out.String())
	}
	if strings.Contains(out.String(), "note:") {
		t.Errorf("a 3x ratio needs no note:\n%s", out.String())
	}
}
