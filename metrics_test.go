package main

import (
	"bufio"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/theater-storefs/theater-storefs/fs"
)

// TestMetricsEndpoint: the endpoint, started in this process on a free
// loopback port, serves every promised family in the text format.
func TestMetricsEndpoint(t *testing.T) {
	ms, err := startMetrics("127.0.0.1:0", fs.NewStats())
	if err != nil {
		t.Fatal(err)
	}
	defer ms.Close()
	resp, err := http.Get("http://" + ms.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != metricsContentType {
		t.Fatalf("GET /metrics: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	text := string(body)
	for _, want := range []string{
		"# TYPE theater_storefs_ops_total counter",
		`theater_storefs_ops_total{op="lookup"} 0`,
		`theater_storefs_ops_total{op="write"} 0`,
		"# TYPE theater_storefs_op_errors_total counter",
		`theater_storefs_op_errors_total{op="getattr"} 0`,
		"# TYPE theater_storefs_op_seconds histogram",
		`theater_storefs_op_seconds_bucket{op="read",le="+Inf"} 0`,
		`theater_storefs_op_seconds_sum{op="read"} 0`,
		`theater_storefs_op_seconds_count{op="read"} 0`,
		"# TYPE theater_storefs_op_max_seconds gauge",
		"# TYPE theater_storefs_uptime_seconds gauge",
		"theater_storefs_uptime_seconds ",
		"# TYPE theater_storefs_gomaxprocs gauge",
		"theater_storefs_gomaxprocs ",
		"# TYPE process_start_time_seconds gauge",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	checkExposition(t, text)

	for _, path := range []string{"/", "/metrics/x"} {
		resp, err := http.Get("http://" + ms.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %s, want 404", path, resp.Status)
		}
	}
}

// sampleRE is one sample line of the text format, as Prometheus parses it.
var sampleRE = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (?:[-+]?[0-9.eE+-]+|\+Inf|NaN)$`)

// checkExposition fails on a line Prometheus would not parse, and on a
// sample of a family announced by no TYPE line before it.
func checkExposition(t *testing.T, text string) {
	t.Helper()
	typed := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if f := strings.Fields(line); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			typed[f[2]] = f[3]
			continue
		}
		if strings.HasPrefix(line, "# HELP ") {
			continue
		}
		if !sampleRE.MatchString(line) {
			t.Errorf("not a sample line: %q", line)
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		base := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(name, suffix); ok && typed[b] == "histogram" {
				base = b
			}
		}
		if typed[base] == "" {
			t.Errorf("sample %q before its family's TYPE", line)
		}
	}
	if !strings.HasSuffix(text, "\n") {
		t.Error("exposition does not end with a newline")
	}
}

// TestWriteMetrics: counts, errnos and cumulative buckets of a snapshot.
func TestWriteMetrics(t *testing.T) {
	snap := fs.StatsSnapshot{
		UptimeSeconds:          12.5,
		GOMAXPROCS:             1,
		HistogramBoundsSeconds: []float64{1e-5, 1e-3},
		Ops: map[string]fs.OpStats{
			"lookup": {Count: 6, Errors: 3, TotalSeconds: 0.25, MaxSeconds: 0.2, Histogram: []uint64{1, 2, 3},
				Errnos: map[string]uint64{"ENOENT": 2, "EIO": 1}},
			"read": {Histogram: []uint64{0, 0, 0}},
		},
	}
	var b strings.Builder
	if err := writeMetrics(&b, snap, time.Unix(1700000000, 500000000)); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	for _, want := range []string{
		`theater_storefs_ops_total{op="lookup"} 6`,
		`theater_storefs_op_errors_total{op="lookup"} 3`,
		`theater_storefs_op_errno_total{op="lookup",errno="EIO"} 1`,
		`theater_storefs_op_errno_total{op="lookup",errno="ENOENT"} 2`,
		`theater_storefs_op_seconds_bucket{op="lookup",le="1e-05"} 1`,
		`theater_storefs_op_seconds_bucket{op="lookup",le="0.001"} 3`,
		`theater_storefs_op_seconds_bucket{op="lookup",le="+Inf"} 6`,
		`theater_storefs_op_seconds_sum{op="lookup"} 0.25`,
		`theater_storefs_op_seconds_count{op="lookup"} 6`,
		`theater_storefs_op_max_seconds{op="lookup"} 0.2`,
		`theater_storefs_ops_total{op="read"} 0`,
		"theater_storefs_uptime_seconds 12.5",
		"theater_storefs_gomaxprocs 1",
		"process_start_time_seconds 1.7000000005e+09",
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("no %q in:\n%s", want, text)
		}
	}
	if strings.Contains(text, `errno_total{op="read"`) {
		t.Error("an op without errors has errno samples")
	}
	// lookup before read, EIO before ENOENT: the same text every time.
	if strings.Index(text, `{op="lookup"}`) > strings.Index(text, `{op="read"}`) ||
		strings.Index(text, `"EIO"`) > strings.Index(text, `"ENOENT"`) {
		t.Errorf("samples not in name order:\n%s", text)
	}
	checkExposition(t, text)
}

func TestCheckMetricsAddr(t *testing.T) {
	for _, tt := range []struct {
		addr   string
		public bool
		ok     bool
	}{
		{"127.0.0.1:9464", false, true},
		{"127.0.0.2:9464", false, true},
		{"[::1]:9464", false, true},
		{"localhost:9464", false, true},
		{"127.0.0.1:0", false, true},
		{":9464", false, false},
		{"0.0.0.0:9464", false, false},
		{"192.0.2.1:9464", false, false},
		{"example.com:9464", false, false},
		{":9464", true, true},
		{"0.0.0.0:9464", true, true},
		{"127.0.0.1", false, false},
		{"127.0.0.1:http", false, false},
		{"127.0.0.1:70000", true, false},
	} {
		err := checkMetricsAddr(tt.addr, tt.public)
		if (err == nil) != tt.ok {
			t.Errorf("checkMetricsAddr(%q, public=%v) = %v, want ok=%v", tt.addr, tt.public, err, tt.ok)
		}
		if err != nil {
			if _, usage := err.(usageError); !usage {
				t.Errorf("checkMetricsAddr(%q): %v is not a usage error", tt.addr, err)
			}
		}
	}
}

// TestMountMetricsUsage: a public address without --metrics-public is bad
// usage, refused before anything is mounted.
func TestMountMetricsUsage(t *testing.T) {
	c := newCLI(t)
	mnt := t.TempDir()
	wantError(t, c.run("mount", "--metrics", "0.0.0.0:9464", mnt), 2, "--metrics-public")
	wantError(t, c.run("mount", "--metrics-public", mnt), 2, "--metrics")
	wantError(t, c.run("mount", "--metrics", "nonsense", mnt), 2, "HOST:PORT")
}

// TestCompletionAndMan: the scripts and the page come from the command
// definitions.
func TestCompletionAndMan(t *testing.T) {
	cleanEnv(t)
	for shell, want := range map[string]string{
		"bash": "complete -o bashdefault -o default -F _theater_storefs_complete theater-storefs",
		"zsh":  "#compdef theater-storefs",
		"fish": "complete -c theater-storefs",
	} {
		r := runCLI(t, "", "completion", shell)
		if r.code != 0 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, "generate-bash-completion") && shell != "fish" {
			t.Errorf("completion %s:\n%s", shell, r)
		}
	}
	wantError(t, runCLI(t, "", "completion", "tcsh"), 2, "tcsh")
	wantError(t, runCLI(t, "", "completion"), 2, "wrong number of arguments")

	r := runCLI(t, "", "man")
	if r.code != 0 {
		t.Fatalf("man:\n%s", r)
	}
	for _, want := range []string{".TH theater-storefs 1", ".SH COMMANDS", "theater-storefs mount [OPTIONS] MOUNTPOINT", `\fB--metrics\fP`, "completion"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("man page lacks %q", want)
		}
	}
	if strings.Contains(r.stdout, ".SH man") || strings.Contains(r.stdout, "print the man page") {
		t.Error("the hidden man command is in the man page")
	}
	if help := runCLI(t, "", "--help"); strings.Contains(help.stdout, "man page") || !strings.Contains(help.stdout, "completion") {
		t.Errorf("--help should list completion and not man:\n%s", help.stdout)
	}
}
