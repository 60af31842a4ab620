package integration

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// helperEnv makes the test binary, run again, a helper process instead of
// the tests: a writer that holds a label open. It must be another process
// that never forks: a fork+exec closes every inherited descriptor in the
// child, and each of those closes is a FUSE flush, which commits.
const helperEnv = "THEATER_STOREFS_TEST_HELPER"

// helper is the holder: it opens the file named by the environment, says
// "ok", then obeys lines on stdin: "write TEXT" writes TEXT, "close" closes
// and exits. Each step answers "ok" or "error: ...". With the mode
// fsyncWriterMode it is fsyncWriter instead.
func helper() int {
	if os.Getenv(helperEnv) == fsyncWriterMode {
		return fsyncWriter()
	}
	flags := os.O_WRONLY
	if os.Getenv(helperEnv+"_TRUNC") != "" {
		flags |= os.O_TRUNC
	}
	if os.Getenv(helperEnv+"_CREATE") != "" {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(os.Getenv(helperEnv+"_PATH"), flags, 0)
	if err != nil {
		fmt.Println("error:", err)
		return 1
	}
	fmt.Println("ok")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		cmd, arg, _ := strings.Cut(in.Text(), " ")
		switch cmd {
		case "write":
			_, err = f.WriteString(arg)
		case "close":
			err = f.Close()
		default:
			err = fmt.Errorf("unknown command %q", cmd)
		}
		if err != nil {
			fmt.Println("error:", err)
			return 1
		}
		fmt.Println("ok")
		if cmd == "close" {
			return 0
		}
	}
	return 1
}

// startHelper starts this test binary as a helper process (cmd, with its
// mode in the environment) and returns its standard input and output.
// The helper is ended when the test is.
func startHelper(t *testing.T, cmd *exec.Cmd) (io.WriteCloser, io.ReadCloser) {
	t.Helper()
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// At the end: close its input, which ends it, and wait (killing it
	// after 5 s).
	t.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	return in, out
}

// holder drives a helper process holding a file open for writing.
type holder struct {
	t   *testing.T
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// holdOpen starts a helper that opens path for writing, with O_TRUNC and
// O_CREAT as flags asks, and keeps it open.
func holdOpen(t *testing.T, path string, flags int) *holder {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), helperEnv+"=holder", helperEnv+"_PATH="+path)
	if flags&os.O_TRUNC != 0 {
		cmd.Env = append(cmd.Env, helperEnv+"_TRUNC=1")
	}
	if flags&os.O_CREATE != 0 {
		cmd.Env = append(cmd.Env, helperEnv+"_CREATE=1")
	}
	in, out := startHelper(t, cmd)
	h := &holder{t: t, cmd: cmd, in: in, out: bufio.NewReader(out)}
	h.reply("open")
	return h
}

// reply waits for the helper's answer to a step.
func (h *holder) reply(step string) {
	h.t.Helper()
	got := make(chan string, 1)
	go func() {
		line, _ := h.out.ReadString('\n')
		got <- strings.TrimSpace(line)
	}()
	select {
	case line := <-got:
		if line != "ok" {
			h.t.Fatalf("holder: %s: %q", step, line)
		}
	case <-time.After(10 * time.Second):
		h.cmd.Process.Kill()
		h.t.Fatalf("holder: %s: no answer within 10s (the mount hangs?)", step)
	}
}

func (h *holder) do(line string) {
	h.t.Helper()
	if _, err := io.WriteString(h.in, line+"\n"); err != nil {
		h.t.Fatal(err)
	}
	h.reply(line)
}

func (h *holder) write(s string) { h.t.Helper(); h.do("write " + s) }
func (h *holder) close()         { h.t.Helper(); h.do("close") }
