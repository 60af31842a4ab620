// Command benchsummary reads `go test -bench` output on standard input and
// prints the median of every metric of every benchmark, then the figure the
// store's design rests on: how much faster group commit makes 8 concurrent
// durable writers than one fsync per blob (from BenchmarkGroupCommitPaired
// when it ran, which measures both side by side in each run).
//
//	go test -run '^$' -bench . -count 5 ./store/ | go run ./bench/benchsummary
package main

import (
	"bufio"
	"fmt"
	"github.com/theater-storefs/theater-storefs/internal/median"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Names of the two sides of BenchmarkConcurrentStore, and of the benchmark
// that runs both in turn within each run.
const (
	groupCommit = "ConcurrentStore/group-commit"
	oneFsync    = "ConcurrentStore/one-fsync-per-blob"
	paired      = "GroupCommitPaired"
	// minRatio is what group commit is expected to gain with 8 writers.
	minRatio = 3.0
)

// result holds every value seen for each unit of one benchmark.
type result struct {
	name   string
	values map[string][]float64 // unit -> one value per run
}

// procSuffix is the -GOMAXPROCS suffix go test appends to names.
var procSuffix = regexp.MustCompile(`-[0-9]+$`)

// parse reads benchmark lines, in the order benchmarks first appear:
//
//	BenchmarkStore/4KiB-2   103   2274152 ns/op   1.80 MB/s   439.7 stores/s
func parse(r io.Reader) ([]*result, error) {
	var out []*result
	byName := map[string]*result{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") || len(f)%2 != 0 {
			continue
		}
		if _, err := strconv.ParseInt(f[1], 10, 64); err != nil {
			continue // not a result line (e.g. a log line starting with a name)
		}
		name := procSuffix.ReplaceAllString(strings.TrimPrefix(f[0], "Benchmark"), "")
		res := byName[name]
		if res == nil {
			res = &result{name: name, values: map[string][]float64{}}
			byName[name] = res
			out = append(out, res)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			res.values[f[i+1]] = append(res.values[f[i+1]], v)
		}
	}
	return out, sc.Err()
}

// rate is the median ops per second: a reported "<op>s/s" metric (the
// first by name, if several), else derived from ns/op.
func (r *result) rate() (float64, string) {
	var units []string
	for unit := range r.values {
		if strings.HasSuffix(unit, "/s") && unit != "MB/s" {
			units = append(units, unit)
		}
	}
	if len(units) > 0 {
		slices.Sort(units)
		return median.Of(r.values[units[0]]), units[0]
	}
	if ns := median.Of(r.values["ns/op"]); ns > 0 {
		return 1e9 / ns, "ops/s"
	}
	return 0, "ops/s"
}

func main() {
	results, err := parse(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchsummary:", err)
		os.Exit(1)
	}
	if len(results) == 0 {
		fmt.Fprintln(os.Stderr, "benchsummary: no benchmark results on standard input")
		os.Exit(1)
	}
	report(os.Stdout, results)
}

func report(w io.Writer, results []*result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "benchmark (medians)\truns\tns/op\tMB/s\trate\t")
	byName := map[string]*result{}
	for _, r := range results {
		byName[r.name] = r
		rate, unit := r.rate()
		mbs := "-"
		if v, ok := r.values["MB/s"]; ok {
			mbs = strconv.FormatFloat(median.Of(v), 'f', 2, 64)
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%.1f %s\t\n", r.name, len(r.values["ns/op"]), median.Of(r.values["ns/op"]), mbs, rate, unit)
	}
	tw.Flush()

	if p := byName[paired]; p != nil && len(p.values["x"]) > 0 {
		x := p.values["x"]
		ratio := median.Of(x)
		fmt.Fprintf(w, "\ngroup commit: %.0f stores/s, one fsync per blob: %.0f stores/s, side by side in each of %d runs; ratio %.2f x (median; runs %.2f to %.2f)\n",
			median.Of(p.values["group-stores/s"]), median.Of(p.values["fsync-stores/s"]), len(x), ratio, slices.Min(x), slices.Max(x))
		note(w, ratio)
		return
	}
	g, o := byName[groupCommit], byName[oneFsync]
	if g == nil || o == nil {
		fmt.Fprintf(w, "\nno %s and %s results: no group commit ratio\n", groupCommit, oneFsync)
		return
	}
	gr, _ := g.rate()
	or, _ := o.rate()
	if or == 0 {
		return
	}
	ratio := gr / or
	fmt.Fprintf(w, "\ngroup commit: %.0f stores/s, one fsync per blob: %.0f stores/s, ratio %.2f x\n", gr, or, ratio)
	note(w, ratio)
}

func note(w io.Writer, ratio float64) {
	if ratio < minRatio {
		fmt.Fprintf(w, "note: group commit is less than %.0fx faster than one fsync per blob with 8 writers\n", minRatio)
	}
}
