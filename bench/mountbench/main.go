// Command mountbench measures theater-storefs through a real mount, each
// figure next to the same work done directly on the store's files in the
// same run (issue 5): sequential reads warm and cold, by hash and by label,
// many small files, ls -l of a large directory, cp into a label, the
// server's peak memory, and the time a store of a million blobs takes to
// mount.
//
// It builds the binary fresh, makes its stores on the real disk under -dir
// (never tmpfs: fsync and page-cache behaviour would be meaningless there),
// keeps the large generated stores there between runs (each has a marker
// file beside it), mounts with `theater-storefs mount`, and unmounts every
// mount it made on return and on SIGINT/SIGTERM. Every figure is the median
// of -runs runs; each baseline is measured in the same runs, interleaved
// with the mount's.
//
//	go run ./bench/mountbench                       # every row, full size (needs root for cold reads)
//	go run ./bench/mountbench -size 64MiB -small 1000 -many 10000 -million 20000 -runs 3
//	go run ./bench/mountbench -only read,cp
//
// Rows (-only): read (by-hash warm and cold, by-label warm), cat, ls, cp,
// rss (peak memory writing and reading -size), mount1m (peak memory listing
// -million blobs, and the time to mount them).
//
// It exits 0 whether or not the goals are met (-strict makes a missed goal
// exit 1), 1 when a measurement failed, and 0 with a message when FUSE is
// not available at all.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// groups are the row groups -only selects, in the order they run.
var groups = []string{"read", "cat", "ls", "cp", "rss", "mount1m"}

type config struct {
	dir     string
	runs    int
	only    map[string]bool
	size    int64
	small   int
	many    int
	million int
	bin     string
	fresh   bool
	strict  bool
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "mountbench:", err)
		return 2
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		fmt.Fprintln(stdout, "mountbench: skipped: /dev/fuse is missing (install fuse3 and run where /dev/fuse exists)")
		return 0
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &bench{cfg: cfg, ctx: ctx, log: stderr, mounts: map[string]*mount{}}
	defer b.cleanup()

	// The first signal stops the measurement; run returns through its
	// defers, which unmount. A second one unmounts and exits at once.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		s, ok := <-sigs
		if !ok {
			return
		}
		fmt.Fprintf(stderr, "mountbench: %v: stopping, unmounting\n", s)
		cancel()
		if _, ok := <-sigs; ok {
			b.cleanup()
			os.Exit(130)
		}
	}()

	if err := b.setup(); err != nil {
		fmt.Fprintln(stderr, "mountbench:", err)
		return 1
	}
	failed := false
	for _, g := range groups {
		if !cfg.only[g] {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		b.progress("-- %s", g)
		rows, err := b.runGroup(g)
		if err != nil {
			failed = true
			if ctx.Err() == nil {
				fmt.Fprintf(stderr, "mountbench: %s: %v\n", g, err)
			}
			if ctx.Err() != nil {
				err = errors.New("interrupted")
			}
			for _, r := range rows {
				if r.err == nil && r.skip == "" && len(r.mount) < cfg.runs {
					r.err = err
				}
			}
		}
		b.rows = append(b.rows, rows...)
	}
	// Unmounted and tidied before printing: a reader that closes the pipe
	// early must not leave anything behind.
	b.cleanup()
	b.report(stdout)
	if ctx.Err() != nil {
		return 130
	}
	if failed {
		return 1
	}
	if cfg.strict {
		for _, r := range b.rows {
			if r.met() == "no" {
				return 1
			}
		}
	}
	return 0
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fl := flag.NewFlagSet("mountbench", flag.ContinueOnError)
	fl.SetOutput(stderr)
	cfg := &config{}
	var only, size string
	fl.StringVar(&cfg.dir, "dir", "", "where stores, mountpoints and logs go, on a real disk (default: <repository>/bench/out/mountbench)")
	fl.IntVar(&cfg.runs, "runs", 5, "runs per figure; the table shows medians")
	fl.StringVar(&only, "only", strings.Join(groups, ","), "rows to measure, comma-separated: "+strings.Join(groups, ", "))
	fl.StringVar(&size, "size", "1GiB", "size of the large file read, written and copied")
	fl.IntVar(&cfg.small, "small", 10000, "number of 4 KiB blobs read by cat")
	fl.IntVar(&cfg.many, "many", 100000, "number of blobs listed by ls -l")
	fl.IntVar(&cfg.million, "million", 1000000, "number of blobs listed for peak memory and mounted for mount time")
	fl.StringVar(&cfg.bin, "bin", "", "use this theater-storefs binary instead of building one")
	fl.BoolVar(&cfg.fresh, "fresh", false, "regenerate the cached stores under -dir")
	fl.BoolVar(&cfg.strict, "strict", false, "exit 1 when a goal is missed")
	fl.Usage = func() {
		fmt.Fprintln(stderr, "usage: mountbench [flags]\n\nMeasures a theater-storefs mount against the same work on the store's files.")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return nil, err
	}
	if fl.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fl.Arg(0))
	}
	var err error
	if cfg.size, err = parseSize(size); err != nil {
		return nil, fmt.Errorf("-size: %w", err)
	}
	if cfg.size < 1<<20 {
		return nil, fmt.Errorf("-size must be at least 1MiB, not %s", size)
	}
	if cfg.runs < 1 {
		return nil, fmt.Errorf("-runs must be at least 1")
	}
	for _, n := range []struct {
		name string
		v    int
	}{{"-small", cfg.small}, {"-many", cfg.many}, {"-million", cfg.million}} {
		if n.v < 1 {
			return nil, fmt.Errorf("%s must be at least 1", n.name)
		}
	}
	if cfg.only, err = parseOnly(only); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseOnly reads -only: a comma-separated list of groups, or "all".
func parseOnly(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		switch {
		case f == "":
		case f == "all":
			for _, g := range groups {
				out[g] = true
			}
		case slices.Contains(groups, f):
			out[f] = true
		default:
			return nil, fmt.Errorf("-only: no row group %q (have %s)", f, strings.Join(groups, ", "))
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-only selects nothing")
	}
	return out, nil
}

// parseSize reads a byte count with an optional binary suffix: 1GiB,
// 64MiB, 512KiB, 1G, 4096.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
		{"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(t), 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a size: %q (e.g. 1GiB, 64MiB, 4096)", s)
	}
	return int64(n * float64(mult)), nil
}

// repoRoot finds the module this program belongs to, from the working
// directory: the directory of go.mod as the go command sees it.
func repoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("run mountbench inside the theater-storefs repository (no go.mod here)")
	}
	return filepath.Dir(mod), nil
}

// cpus is shown in the header: figures on 2 CPUs and on 32 differ.
func cpus() int { return runtime.NumCPU() }
