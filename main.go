// Command theater-storefs mounts a Theater content store as a file system,
// and offers the store operations that have no file gesture: put, get,
// label, fsck, gc and the rest.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

// Exit codes: 1 for an operation that failed, 2 for bad usage.
const (
	exitFailed = 1
	exitUsage  = 2
)

// usageError marks an error as the user's misuse of the command line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func main() {
	os.Exit(run(os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run executes the command line and returns the exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	out := &stickyWriter{w: stdout}
	app := newApp(stdin, out, stderr)
	var names []string
	for _, c := range app.Commands {
		names = append(names, c.Names()...)
	}
	if helperArgs, ok, err := fstabArgs(args, names); ok {
		if err != nil {
			fmt.Fprintf(stderr, "%s: %s\n", app.Name, oneLine(err))
			return exitUsage
		}
		args = helperArgs
	}
	args = hoistFlags(app, args)
	var notFound error
	app.CommandNotFound = func(c *cli.Context, name string) {
		notFound = usagef("no command %q; see %s --help", name, app.Name)
	}
	err := app.RunContext(ctx, args)
	if err == nil {
		err = notFound
	}
	if err == nil && out.err != nil {
		// A command that printed what it found, into a full disk or a
		// closed pipe, has not done its job.
		err = fmt.Errorf("writing the output: %w", out.err)
	}
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "%s: %s\n", app.Name, oneLine(err))
	var ue usageError
	var ec cli.ExitCoder
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ec):
		return ec.ExitCode()
	}
	return exitFailed
}

// stickyWriter remembers the first error writing to w, which commands
// printing line by line do not check.
type stickyWriter struct {
	w   io.Writer
	err error
}

func (s *stickyWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

// ReadFrom keeps the underlying writer's own (an *os.File's is
// copy_file_range or splice: get of a large blob copies in the kernel).
func (s *stickyWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := io.Copy(s.w, r)
	if err != nil && s.err == nil {
		s.err = err
	}
	return n, err
}

// oneLine keeps an error to the single line the user sees.
func oneLine(err error) string {
	s := err.Error()
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' {
			return s[:i]
		}
	}
	return s
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:      "theater-storefs",
		Usage:     "browse and change a Theater content store as files",
		UsageText: "theater-storefs [--store DIR] COMMAND [ARGS...]",
		Description: "A Theater store keeps blobs named by the SHA-1 of their content under data/ and\n" +
			"labels under labels/. `theater-storefs mount MNT` shows them as by-hash/, by-label/\n" +
			"and actors/; the other commands work on the store directly.",
		Reader:               stdin,
		Writer:               stdout,
		ErrWriter:            stderr,
		EnableBashCompletion: true,
		HideHelpCommand:      true,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "store",
				Usage:   "the store `DIR`, or a bucket: s3://BUCKET/PREFIX?endpoint=URL (default: $THEATER_STORE, else $THEATER_HOME/store, else ./store)",
				EnvVars: []string{"THEATER_STORE"},
			},
			&cli.StringFlag{
				Name:    "labels",
				Usage:   "with a bucket: keep its labels in etcd at `URL` (etcd://host:port/prefix) rather than in the bucket",
				EnvVars: []string{"THEATER_LABELS"},
			},
			&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log as `text` or json"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "log more"},
		},
		Commands:       withCompletion(append(commands(), completionCommand(), manCommand())),
		ExitErrHandler: func(*cli.Context, error) {}, // run prints and exits
		OnUsageError: func(c *cli.Context, err error, isSub bool) error {
			return usageError{err.Error()}
		},
		Before: func(c *cli.Context) error {
			return setupLogging(c, stderr)
		},
	}
}

// logLevel is what the logs show: a command reports its own failure in
// one line, so its logs stay quiet unless asked (--verbose); a mount
// serving in the foreground shows warnings (serve raises it).
var logLevel = new(slog.LevelVar)

// quiet is above every level the program logs at.
const quiet = slog.LevelError + 4

func setupLogging(c *cli.Context, stderr io.Writer) error {
	logLevel.Set(quiet)
	if c.Bool("verbose") {
		logLevel.Set(slog.LevelInfo)
	}
	opts := &slog.HandlerOptions{Level: logLevel}
	var h slog.Handler
	switch c.String("log-format") {
	case "text":
		h = slog.NewTextHandler(stderr, opts)
	case "json":
		h = slog.NewJSONHandler(stderr, opts)
	default:
		return usagef("--log-format must be text or json, not %q", c.String("log-format"))
	}
	slog.SetDefault(slog.New(h))
	return nil
}

// storeDir resolves the store location as Theater does: --store (or
// THEATER_STORE), else "store" under THEATER_HOME, else under the working
// directory.
func storeDir(c *cli.Context) string {
	if d := c.String("store"); d != "" {
		return d
	}
	if home := os.Getenv("THEATER_HOME"); home != "" {
		return filepath.Join(home, "store")
	}
	return "store"
}

// openStore opens the store the flags name: a directory, or a bucket
// (s3://...). Only commands that write (create is true) make a store
// directory that is not there yet; a bucket is made by its service.
func openStore(c *cli.Context, create bool) (store.Backend, error) {
	return openAt(c, storeDir(c), create, c.String("labels"))
}

// openAt opens the store at where, a directory or a bucket, the bucket's
// labels in etcd if labels names it.
func openAt(c *cli.Context, where string, create bool, labels string) (store.Backend, error) {
	if labels != "" {
		if _, _, err := remote.ParseEtcdURL(labels); err != nil {
			return nil, usageError{err.Error()}
		}
		if !remote.IsURL(where) {
			return nil, usagef("--labels is for a bucket's labels; %s is a store directory", where)
		}
	}
	if remote.IsURL(where) {
		loc, err := remote.ParseURL(where)
		if err != nil {
			return nil, usageError{err.Error()}
		}
		return remote.Open(c.Context, loc, remote.Options{Labels: labels})
	}
	if err := notAURL(where); err != nil {
		return nil, err
	}
	return openDir(where, create)
}

// notAURL refuses a store directory that looks like a mistyped URL.
func notAURL(where string) error {
	if strings.Contains(where, "://") || strings.HasPrefix(strings.ToLower(where), "s3:") {
		return usagef("%s is neither a store directory nor a bucket; a bucket is s3://BUCKET/PREFIX?endpoint=URL", where)
	}
	return nil
}

// openLocal opens the store directory the flags name, for what only a
// directory does.
func openLocal(c *cli.Context, create bool) (*store.Store, error) {
	dir := storeDir(c)
	if remote.IsURL(dir) {
		return nil, usagef("%s: works on a store directory, not on a bucket (%s); copy the bucket with sync first", c.Command.Name, dir)
	}
	if err := notAURL(dir); err != nil {
		return nil, err
	}
	return openDir(dir, create)
}

func openDir(dir string, create bool) (*store.Store, error) {
	if !create {
		if _, err := os.Stat(filepath.Join(dir, store.DataDir)); err != nil {
			return nil, fmt.Errorf("no store at %s (set --store or THEATER_STORE): %w", dir, errors.Unwrap(err))
		}
	} else if err := checkStoreDir(dir, false); err != nil {
		return nil, err
	}
	return store.Open(dir, store.Options{})
}

// checkStoreDir refuses to make a store inside a directory that holds
// other things (a mistyped --store), and with mustExist a directory that
// is not there at all: mount serves an existing store, or an empty
// directory made for one.
func checkStoreDir(dir string, mustExist bool) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist) && mustExist:
		return fmt.Errorf("no store at %s (set --store or THEATER_STORE; to start an empty store there, create the directory)", dir)
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("store %s: %w", dir, err)
	}
	others := 0
	for _, e := range ents {
		switch name := e.Name(); {
		case name == store.DataDir || name == store.LabelsDir:
			return nil
		case name == store.TmpDir || name == "lost+found" || strings.HasPrefix(name, "."):
			// Ours, a file system's own, or hidden: not someone's files.
		default:
			others++
		}
	}
	if others > 0 {
		return fmt.Errorf("%s is not a store: it has no %s/ or %s/ but holds other files (set --store or THEATER_STORE)", dir, store.DataDir, store.LabelsDir)
	}
	return nil
}

// isTerminal reports whether w is a terminal, for progress bars.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}
