package main

import (
	"fmt"
	"github.com/theater-storefs/theater-storefs/internal/median"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"
)

// kind is what a row's numbers are.
type kind int

const (
	throughput kind = iota // bytes/s, higher is better
	duration               // seconds, lower is better
	memory                 // bytes, lower is better
)

// goal is what a row must reach: a ratio of the mount's median to the
// baseline's, or (ratio false) a limit on the mount's median itself.
type goal struct {
	ratio   bool
	atLeast bool // >= value; else <= value for a ratio, < value for a limit
	value   float64
}

// row is one line of the table.
type row struct {
	what     string
	baseWhat string // "" when the row has no baseline
	kind     kind
	mount    []float64 // one value per run
	base     []float64
	goal     *goal // nil: for information only
	skip     string
	err      error
	notes    []string
}

// ratio is the mount's median over the baseline's, or 0.
func (r *row) ratio() float64 {
	if len(r.mount) == 0 || len(r.base) == 0 || median.Of(r.base) == 0 {
		return 0
	}
	return median.Of(r.mount) / median.Of(r.base)
}

// met says whether the goal is reached: "yes", "no", or "—".
func (r *row) met() string {
	if r.goal == nil || r.err != nil || r.skip != "" || len(r.mount) == 0 {
		return "—"
	}
	v := median.Of(r.mount)
	if r.goal.ratio {
		if len(r.base) == 0 {
			return "—"
		}
		v = r.ratio()
	}
	var ok bool
	switch {
	case r.goal.atLeast:
		ok = v >= r.goal.value
	case r.goal.ratio:
		ok = v <= r.goal.value
	default:
		ok = v < r.goal.value
	}
	if ok {
		return "yes"
	}
	return "no"
}

func (r *row) goalText() string {
	g := r.goal
	switch {
	case g == nil:
		return "(info)"
	case g.ratio && g.atLeast:
		return fmt.Sprintf(">= %gx throughput", g.value)
	case g.ratio:
		return fmt.Sprintf("<= %gx the time", g.value)
	}
	return "< " + r.format(g.value)
}

// format shows one value of the row's kind.
func (r *row) format(v float64) string {
	switch r.kind {
	case throughput:
		return fmtBytes(v) + "/s"
	case duration:
		return fmtDur(v)
	}
	return fmtBytes(v)
}

func fmtBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return trimZero(fmt.Sprintf("%.2f", v/(1<<30))) + " GiB"
	case v >= 1<<20:
		return trimZero(fmt.Sprintf("%.1f", v/(1<<20))) + " MiB"
	case v >= 1<<10:
		return trimZero(fmt.Sprintf("%.1f", v/(1<<10))) + " KiB"
	}
	return fmt.Sprintf("%.0f B", v)
}

func trimZero(s string) string {
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

func fmtDur(sec float64) string {
	switch {
	case sec >= 10:
		return fmt.Sprintf("%.1f s", sec)
	case sec >= 1:
		return fmt.Sprintf("%.2f s", sec)
	case sec >= 0.01:
		return fmt.Sprintf("%.0f ms", sec*1000)
	}
	return fmt.Sprintf("%.2f ms", sec*1000)
}

// cell escapes a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func (b *bench) report(w io.Writer) {
	fmt.Fprintf(w, "\n## theater-storefs mount speed (mountbench, %s)\n\n", time.Now().Format("2006-01-02 15:04"))
	fmt.Fprintf(w, "kernel %s, %d CPUs, %s, medians of %d runs, stores in %s (%s)\n", kernelRelease(), cpus(), runtime.Version(), b.cfg.runs, b.dir, b.fsType)
	// Other work on the machine skews every figure: say how much there was.
	fmt.Fprintf(w, "load average at the start %s, at the end %s\n", b.loadStart, loadAvg())
	switch {
	case b.passthrough != "":
		fmt.Fprintf(w, "FUSE passthrough: %s\n", b.passthrough)
	case !b.root0:
		fmt.Fprintln(w, "FUSE passthrough: not possible (not root); cold rows skipped")
	default:
		fmt.Fprintln(w, "FUSE passthrough: not measured (it shows in the cold read row)")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| what | figure | baseline in the same run | ratio | goal | goal met? |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range b.rows {
		mnt, base, ratio := "—", "—", "—"
		switch {
		case r.err != nil && len(r.mount) == 0:
			mnt = "failed: " + firstLine(r.err.Error())
		case r.skip != "":
			mnt = "skipped: " + r.skip
		case len(r.mount) > 0:
			mnt = r.format(median.Of(r.mount))
		}
		if r.baseWhat != "" {
			base = r.baseWhat
			if len(r.base) > 0 {
				base = r.format(median.Of(r.base)) + " (" + r.baseWhat + ")"
			}
		}
		if x := r.ratio(); x > 0 {
			ratio = fmt.Sprintf("%.2fx", x)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", cell(r.what), cell(mnt), cell(base), ratio, cell(r.goalText()), r.met())
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Runs, in order (ratio: mount over baseline; throughput higher is better, time and memory lower):")
	for _, r := range b.rows {
		if len(r.mount) == 0 && len(r.notes) == 0 && r.err == nil {
			continue
		}
		fmt.Fprintf(w, "- %s\n", r.what)
		if len(r.mount) > 0 {
			fmt.Fprintf(w, "  - figure: %s\n", r.formatAll(r.mount))
		}
		if len(r.base) > 0 {
			fmt.Fprintf(w, "  - baseline: %s\n", r.formatAll(r.base))
		}
		for _, n := range r.notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
		if r.err != nil {
			fmt.Fprintf(w, "  - error: %s\n", firstLine(r.err.Error()))
		}
	}
}

func (r *row) formatAll(v []float64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = r.format(x)
	}
	out := strings.Join(s, ", ")
	if len(v) > 1 {
		lo, hi := slices.Min(v), slices.Max(v)
		out += fmt.Sprintf("  (min %s, max %s)", r.format(lo), r.format(hi))
	}
	return out
}
