package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/theater-storefs/theater-storefs/fs"
)

// The --metrics endpoint: the mount's operation counters in Prometheus'
// text exposition format (version 0.0.4), written by hand so that no
// client library is needed.

// metricsContentType is what Prometheus expects of the text format.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// checkMetricsAddr refuses an address that is not host:port, and one that
// other machines could reach unless public is set: the counters say what
// the store's users do.
func checkMetricsAddr(addr string, public bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return usagef("--metrics %q: want HOST:PORT, such as 127.0.0.1:9464", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return usagef("--metrics %q: %q is not a port number", addr, port)
	}
	if public || host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		what := host
		if host == "" {
			what = "every interface"
		}
		return usagef("--metrics %q listens on %s, not loopback: pass --metrics-public to mean it", addr, what)
	}
	return nil
}

// metricsServer serves the metrics until closed.
type metricsServer struct {
	srv *http.Server
	ln  net.Listener
}

// startMetrics listens on addr and serves stats at /metrics. Listening
// happens before it returns, so an address in use fails the mount.
func startMetrics(addr string, stats *fs.Stats) (*metricsServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metricsHandler(stats))
	m := &metricsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second},
		ln:  ln,
	}
	go func() {
		if err := m.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			slog.Warn("metrics endpoint stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return m, nil
}

// Addr is the address the endpoint listens on (with the port chosen, for
// port 0).
func (m *metricsServer) Addr() string { return m.ln.Addr().String() }

// Close stops the endpoint, letting a scrape in progress finish briefly.
func (m *metricsServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return m.srv.Shutdown(ctx)
}

// metricsHandler writes a fresh snapshot of stats on every request.
func metricsHandler(stats *fs.Stats) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metricsContentType)
		writeMetrics(w, stats.Snapshot(), processStart)
	})
}

// processStart is when this process started, near enough.
var processStart = time.Now()

// writeMetrics writes snap in the text exposition format: every operation
// in name order, every family with its HELP and TYPE.
func writeMetrics(out io.Writer, snap fs.StatsSnapshot, started time.Time) error {
	w := bufio.NewWriter(out)
	ops := make([]string, 0, len(snap.Ops))
	for name := range snap.Ops {
		ops = append(ops, name)
	}
	slices.Sort(ops)
	family := func(name, typ, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	num := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

	family("theater_storefs_ops_total", "counter", "FUSE requests answered, by operation.")
	for _, op := range ops {
		fmt.Fprintf(w, "theater_storefs_ops_total{op=%s} %d\n", lv(op), snap.Ops[op].Count)
	}
	family("theater_storefs_op_errors_total", "counter", "FUSE requests answered with an error, by operation.")
	for _, op := range ops {
		fmt.Fprintf(w, "theater_storefs_op_errors_total{op=%s} %d\n", lv(op), snap.Ops[op].Errors)
	}
	family("theater_storefs_op_errno_total", "counter", "FUSE requests answered with an error, by operation and errno.")
	for _, op := range ops {
		errnos := make([]string, 0, len(snap.Ops[op].Errnos))
		for en := range snap.Ops[op].Errnos {
			errnos = append(errnos, en)
		}
		slices.Sort(errnos)
		for _, en := range errnos {
			fmt.Fprintf(w, "theater_storefs_op_errno_total{op=%s,errno=%s} %d\n", lv(op), lv(en), snap.Ops[op].Errnos[en])
		}
	}
	family("theater_storefs_op_seconds", "histogram", "Time taken to answer FUSE requests, by operation.")
	for _, op := range ops {
		o := snap.Ops[op]
		var cum uint64
		for i, n := range o.Histogram {
			cum += n
			le := "+Inf"
			if i < len(snap.HistogramBoundsSeconds) {
				le = num(snap.HistogramBoundsSeconds[i])
			}
			fmt.Fprintf(w, "theater_storefs_op_seconds_bucket{op=%s,le=%s} %d\n", lv(op), lv(le), cum)
		}
		fmt.Fprintf(w, "theater_storefs_op_seconds_sum{op=%s} %s\n", lv(op), num(o.TotalSeconds))
		fmt.Fprintf(w, "theater_storefs_op_seconds_count{op=%s} %d\n", lv(op), o.Count)
	}
	family("theater_storefs_op_max_seconds", "gauge", "The slowest FUSE request since the mount started, by operation.")
	for _, op := range ops {
		fmt.Fprintf(w, "theater_storefs_op_max_seconds{op=%s} %s\n", lv(op), num(snap.Ops[op].MaxSeconds))
	}
	family("theater_storefs_uptime_seconds", "gauge", "Seconds since the mount started.")
	fmt.Fprintf(w, "theater_storefs_uptime_seconds %s\n", num(snap.UptimeSeconds))
	family("theater_storefs_gomaxprocs", "gauge", "CPUs running the server's Go code now (one while it mostly waits).")
	fmt.Fprintf(w, "theater_storefs_gomaxprocs %d\n", snap.GOMAXPROCS)
	family("process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch in seconds.")
	fmt.Fprintf(w, "process_start_time_seconds %s\n", num(float64(started.UnixNano())/1e9))
	return w.Flush()
}

// labelEscaper escapes a label value as the text format wants.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

// lv quotes a label value.
func lv(v string) string { return `"` + labelEscaper.Replace(v) + `"` }
