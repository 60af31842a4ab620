package main

import (
	"io"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1GiB": 1 << 30, "64MiB": 64 << 20, "512KiB": 512 << 10, "1G": 1 << 30,
		"4096": 4096, "1.5GiB": 3 << 29, "100B": 100,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "GiB", "-1MiB", "1 parsec"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) did not fail", in)
		}
	}
}

func TestParseOnly(t *testing.T) {
	got, err := parseOnly("read, cp")
	if err != nil || len(got) != 2 || !got["read"] || !got["cp"] {
		t.Errorf("parseOnly(read, cp) = %v, %v", got, err)
	}
	if got, err := parseOnly("all"); err != nil || len(got) != len(groups) {
		t.Errorf("parseOnly(all) = %v, %v", got, err)
	}
	for _, bad := range []string{"", "reads", ","} {
		if _, err := parseOnly(bad); err == nil {
			t.Errorf("parseOnly(%q) did not fail", bad)
		}
	}
}

func TestFlags(t *testing.T) {
	cfg, err := parseFlags([]string{"-size", "64MiB", "-small", "1000", "-runs", "3", "-only", "read"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.size != 64<<20 || cfg.small != 1000 || cfg.runs != 3 || !cfg.only["read"] || cfg.only["cp"] {
		t.Errorf("parsed %+v", cfg)
	}
	for _, bad := range [][]string{{"-runs", "0"}, {"-size", "1KiB"}, {"-many", "0"}, {"stray"}} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("parseFlags(%q) did not fail", bad)
		}
	}
}

func TestGoals(t *testing.T) {
	for _, c := range []struct {
		r    row
		want string
	}{
		{row{kind: throughput, mount: []float64{9, 10, 11}, base: []float64{10, 10, 10}, goal: &goal{ratio: true, atLeast: true, value: 0.9}}, "yes"},
		{row{kind: throughput, mount: []float64{8, 8, 8}, base: []float64{10}, goal: &goal{ratio: true, atLeast: true, value: 0.9}}, "no"},
		{row{kind: duration, mount: []float64{3, 2, 9}, base: []float64{1}, goal: &goal{ratio: true, value: 3}}, "yes"},
		{row{kind: duration, mount: []float64{4}, base: []float64{1}, goal: &goal{ratio: true, value: 3}}, "no"},
		{row{kind: memory, mount: []float64{100 << 20}, goal: &goal{value: 100 << 20}}, "no"},
		{row{kind: memory, mount: []float64{99 << 20}, goal: &goal{value: 100 << 20}}, "yes"},
		{row{kind: duration, mount: []float64{1}}, "—"},
		{row{kind: duration, skip: "not root", goal: &goal{value: 1}}, "—"},
	} {
		if got := c.r.met(); got != c.want {
			t.Errorf("met() of %+v = %s, want %s", c.r, got, c.want)
		}
	}
}

func TestIsServer(t *testing.T) {
	mnt := "/b/mnt/read"
	server := []string{"/x/theater-storefs", "--store", "/s", "--log-format", "text", "mount", "--foreground", mnt}
	if !isServer(server, mnt) {
		t.Error("the server's command line not recognised")
	}
	client := []string{"/x/theater-storefs", "--store", "/s", "mount", "--log-file", "/l", mnt}
	if isServer(client, mnt) {
		t.Error("the mount client taken for the server")
	}
	if isServer(server, "/b/mnt/other") {
		t.Error("a server of another mountpoint recognised")
	}
}

func TestProcFields(t *testing.T) {
	status := "Name:\ttheater-storefs\nVmPeak:\t  123 kB\nVmHWM:\t   2048 kB\n"
	if v, err := parseProcField([]byte(status), "VmHWM"); err != nil || v != 2048*1024 {
		t.Errorf("VmHWM = %d, %v", v, err)
	}
	if v, err := parseProcField([]byte("rchar: 10\nsyscr: 42\n"), "syscr"); err != nil || v != 42 {
		t.Errorf("syscr = %d, %v", v, err)
	}
	if _, err := parseProcField([]byte(status), "VmRSS"); err == nil {
		t.Error("a missing field did not fail")
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{fmtBytes(1 << 30), "1 GiB"},
		{fmtBytes(1.5 * (1 << 30)), "1.5 GiB"},
		{fmtBytes(100 << 20), "100 MiB"},
		{fmtDur(0.25), "250 ms"},
		{fmtDur(1.234), "1.23 s"},
		{unescapeMount(`/a\040b`), "/a b"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	var out strings.Builder
	b := &bench{cfg: &config{runs: 1}, rows: []*row{
		{what: "a | b", baseWhat: "base", kind: throughput, mount: []float64{1 << 30}, base: []float64{1 << 30}, goal: &goal{ratio: true, atLeast: true, value: 0.9}},
	}}
	b.report(&out)
	if !strings.Contains(out.String(), `| a \| b | 1 GiB/s | 1 GiB/s (base) | 1.00x | >= 0.9x throughput | yes |`) {
		t.Errorf("report:\n%s", out.String())
	}
}
