package main

import (
	"net"
	"path/filepath"
	"slices"
	"testing"
)

func TestFstabArgs(t *testing.T) {
	cmds := []string{"mount", "unmount", "put"}
	tests := []struct {
		in   []string
		want []string // nil: not the helper's form
		bad  bool
	}{
		{in: []string{"tsfs", "/s", "/m", "-o", "ro,allow_other,rw,nosuid,nodev"},
			want: []string{"tsfs", "--store", "/s", "mount", "--read-only", "--allow-other", "/m"}},
		{in: []string{"tsfs", "/s", "/m"}, want: []string{"tsfs", "--store", "/s", "mount", "/m"}},
		{in: []string{"tsfs", "/s", "/m", "-oro", "-n"}, want: []string{"tsfs", "--store", "/s", "mount", "--read-only", "/m"}},
		{in: []string{"tsfs", "/s", "/m", "-o", "log_file=/var/log/x,debug"},
			want: []string{"tsfs", "--store", "/s", "mount", "--log-file", "/var/log/x", "--debug", "/m"}},
		{in: []string{"tsfs", "/s", "/m", "-o", "frobnicate"}, bad: true},
		{in: []string{"tsfs", "/s", "/m", "extra"}, bad: true},
		{in: []string{"tsfs", "put", "file"}},
		{in: []string{"tsfs", "--store", "/s", "mount", "/m"}},
		{in: []string{"tsfs", "mount", "/m"}},
		{in: []string{"tsfs", "ls"}},
	}
	for _, tt := range tests {
		got, ok, err := fstabArgs(tt.in, cmds)
		switch {
		case tt.bad:
			if !ok || err == nil {
				t.Errorf("fstabArgs(%q) = %q, %v, %v; want a usage error", tt.in, got, ok, err)
			}
		case tt.want == nil:
			if ok {
				t.Errorf("fstabArgs(%q) took it as the mount helper's form: %q", tt.in, got)
			}
		default:
			if !ok || err != nil || !slices.Equal(got, tt.want) {
				t.Errorf("fstabArgs(%q) = %q, %v, %v; want %q", tt.in, got, ok, err, tt.want)
			}
		}
	}
}

func TestSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	if err := sdNotify("READY=1"); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(buf[:n]); got != "READY=1" {
		t.Errorf("systemd got %q, want READY=1", got)
	}
	t.Setenv("NOTIFY_SOCKET", "")
	if err := sdNotify("READY=1"); err != nil {
		t.Errorf("outside systemd: %v", err)
	}
}
