package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/schollz/progressbar/v3"
	"github.com/theater-storefs/theater-storefs/store"
	"github.com/theater-storefs/theater-storefs/store/remote"
	"github.com/urfave/cli/v2"
)

var jsonFlag = &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}

func commands() []*cli.Command {
	cmds := []*cli.Command{
		mountCommand(),
		unmountCommand(),
		{
			Name:      "put",
			Usage:     "store a file (or standard input) and print its hash",
			ArgsUsage: "[FILE|-]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "label", Usage: "also append the hash to `LABEL`"},
				&cli.BoolFlag{Name: "replace", Usage: "with --label: make the label hold only this hash"},
			},
			Action: cmdPut,
		},
		{
			Name:      "get",
			Usage:     "write a blob's content to standard output",
			ArgsUsage: "REFERENCE (a hash, store:hash:HASH or store:LABEL)",
			Action:    cmdGet,
		},
		{
			Name:      "label",
			Usage:     "append a hash to a label (creating it)",
			ArgsUsage: "LABEL HASH",
			Action:    cmdLabel,
		},
		{
			Name:      "unlabel",
			Usage:     "remove a label, or one hash from it",
			ArgsUsage: "LABEL [HASH]",
			Action:    cmdUnlabel,
		},
		{
			Name:   "labels",
			Usage:  "list every label, one a line",
			Flags:  []cli.Flag{jsonFlag},
			Action: cmdLabels,
		},
		{
			Name:      "refs",
			Usage:     "list a label's hashes, oldest first",
			ArgsUsage: "LABEL",
			Flags:     []cli.Flag{jsonFlag},
			Action:    cmdRefs,
		},
		{
			Name:   "ls",
			Usage:  "list every blob: hash and size",
			Flags:  []cli.Flag{jsonFlag},
			Action: cmdLs,
		},
		{
			Name:   "du",
			Usage:  "total size of every blob",
			Flags:  []cli.Flag{jsonFlag},
			Action: cmdDu,
		},
		{
			Name:      "chain",
			Usage:     "an actor's events, newest first",
			ArgsUsage: "ACTOR_ID",
			Flags:     []cli.Flag{jsonFlag},
			Action:    cmdChain,
		},
		{
			Name:   "fsck",
			Usage:  "verify every blob and label; exit 1 if anything is wrong",
			Flags:  []cli.Flag{jsonFlag},
			Action: cmdFsck,
		},
		{
			Name:      "sync",
			Usage:     "copy every blob and label of one store into another: a directory or a bucket",
			ArgsUsage: "FROM TO (a store directory or s3://BUCKET/PREFIX?endpoint=URL)",
			Description: "Blobs TO lacks are copied, each verified on the way; then every label of FROM\n" +
				"is made to hold the same refs at TO, as a mirror: refs a label holds only at TO are\n" +
				"dropped from it (sync names the labels that held refs to blobs only TO has; the\n" +
				"blobs stay). Blobs TO has are kept,\n" +
				"so a sync cut short resumes where it stopped. Labels and blobs only TO has are left\n" +
				"alone. --labels (before the command) names the etcd of the bucket among FROM and TO.",
			Flags: []cli.Flag{
				jsonFlag,
				&cli.IntFlag{Name: "jobs", Value: 8, Usage: "copy `N` blobs at once"},
			},
			Action: cmdSync,
		},
		{
			Name:  "gc",
			Usage: "remove blobs that no label or actor chain reaches",
			Flags: []cli.Flag{
				jsonFlag,
				&cli.BoolFlag{Name: "dry-run", Usage: "only list what would be removed"},
				&cli.DurationFlag{Name: "grace", Value: store.DefaultGrace, Usage: "keep unreachable blobs younger than this"},
			},
			Action: cmdGC,
		},
	}
	for _, c := range cmds {
		c.OnUsageError = func(c *cli.Context, err error, _ bool) error {
			return usagef("%s: %s", c.Command.Name, err)
		}
	}
	return cmds
}

// nargs checks the positional argument count.
func nargs(c *cli.Context, min, max int) error {
	if n := c.NArg(); n < min || n > max {
		return usagef("%s: wrong number of arguments; usage: %s %s", c.Command.Name, c.Command.FullName(), c.Command.ArgsUsage)
	}
	return nil
}

func parseHashArg(s string) (store.Hash, error) {
	h, err := store.ParseHash(s)
	if err != nil {
		return h, usagef("%q is not a hash (want 40 lowercase hex characters)", s)
	}
	return h, nil
}

// labelArg checks a label name given on the command line: an invalid name
// is bad usage, not a failed operation.
func labelArg(name string) error {
	if err := store.ValidateLabel(name); err != nil {
		return usageError{err.Error()}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func cmdPut(c *cli.Context) error {
	if err := nargs(c, 0, 1); err != nil {
		return err
	}
	label := c.String("label")
	if c.Bool("replace") && label == "" {
		return usagef("put: --replace needs --label")
	}
	var in io.Reader = c.App.Reader
	name := c.Args().First()
	var size int64 = -1
	if name != "" && name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			size = fi.Size()
		}
		in = f
	}
	if label != "" {
		if err := store.ValidateLabel(label); err != nil {
			return usageError{err.Error()}
		}
	}
	s, err := openStore(c, true)
	if err != nil {
		return err
	}
	defer s.Close()
	if size > 64<<20 && isTerminal(c.App.ErrWriter) {
		bar := progressbar.DefaultBytes(size, "storing")
		in = io.TeeReader(in, bar)
		defer bar.Finish()
	}
	mode := store.LabelNone
	switch {
	case label != "" && c.Bool("replace"):
		mode = store.LabelReplace
	case label != "":
		mode = store.LabelAppend
	}
	h, _, err := s.PutLabeled(c.Context, in, label, mode)
	if err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, h)
	return nil
}

// referenceArg accepts a bare hash as well as Theater's references.
func referenceArg(arg string) string {
	if store.IsHashName(arg) {
		return "store:hash:" + arg
	}
	return arg
}

func cmdGet(c *cli.Context) error {
	if err := nargs(c, 1, 1); err != nil {
		return err
	}
	ref := referenceArg(c.Args().First())
	kind, arg := store.ParseReference(ref)
	switch kind {
	case store.RefPath:
		return usagef("get: %q is not a hash, store:hash:HASH or store:LABEL", ref)
	case store.RefHash:
		if _, err := parseHashArg(arg); err != nil {
			return err
		}
	case store.RefLabel:
		if err := labelArg(arg); err != nil {
			return err
		}
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := s.OpenReference(c.Context, ref)
	if err != nil {
		return err
	}
	defer r.Close()
	if _, ok := s.(*remote.Store); ok {
		// A bucket's blob is verified as it streams in, at its end: land
		// it in a local file first, so that nothing of a corrupt blob
		// reaches the output (a local store verifies before it opens).
		if r, err = verifiedCopy(r); err != nil {
			return err
		}
		defer r.Close()
	}
	_, err = io.Copy(c.App.Writer, r)
	return err
}

// verifiedCopy reads r to its end into a temp file (removed when closed)
// and returns it, rewound; an error on the way (ErrCorrupt at the end) is
// returned instead.
func verifiedCopy(r io.Reader) (io.ReadCloser, error) {
	f, err := os.CreateTemp("", ".theater-storefs-get-*")
	if err != nil {
		return nil, err
	}
	os.Remove(f.Name()) // gone once closed, whatever happens
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func cmdLabel(c *cli.Context) error {
	if err := nargs(c, 2, 2); err != nil {
		return err
	}
	h, err := parseHashArg(c.Args().Get(1))
	if err != nil {
		return err
	}
	if err := store.ValidateLabel(c.Args().First()); err != nil {
		return usageError{err.Error()}
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Label(c.Context, c.Args().First(), h)
}

func cmdUnlabel(c *cli.Context) error {
	if err := nargs(c, 1, 2); err != nil {
		return err
	}
	name := c.Args().First()
	if err := labelArg(name); err != nil {
		return err
	}
	var h store.Hash
	var err error
	if c.NArg() == 2 {
		if h, err = parseHashArg(c.Args().Get(1)); err != nil {
			return err
		}
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if c.NArg() == 2 {
		return s.RemoveFromLabel(c.Context, name, h)
	}
	return s.RemoveLabel(c.Context, name)
}

func cmdLabels(c *cli.Context) error {
	if err := nargs(c, 0, 0); err != nil {
		return err
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	names, err := s.ListLabels(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if names == nil {
			names = []string{}
		}
		return printJSON(c.App.Writer, names)
	}
	for _, n := range names {
		fmt.Fprintln(c.App.Writer, lineSafe(n))
	}
	return nil
}

// lineSafe keeps a name on its line: one holding a newline or another
// control character is printed quoted, as Go quotes a string ("a\nb"),
// so that one name is one line (--json gives every name exactly).
func lineSafe(name string) string {
	if strings.IndexFunc(name, unicode.IsControl) >= 0 {
		return strconv.Quote(name)
	}
	return name
}

func cmdRefs(c *cli.Context) error {
	if err := nargs(c, 1, 1); err != nil {
		return err
	}
	if err := labelArg(c.Args().First()); err != nil {
		return err
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	refs, err := s.GetByLabel(c.Context, c.Args().First())
	if err != nil {
		return err
	}
	if c.Bool("json") {
		out := make([]string, len(refs))
		for i, h := range refs {
			out[i] = h.String()
		}
		return printJSON(c.App.Writer, out)
	}
	for _, h := range refs {
		fmt.Fprintln(c.App.Writer, h)
	}
	return nil
}

// blobEntry is one row of ls --json.
type blobEntry struct {
	Hash string `json:"hash"`
	Size int64  `json:"size"`
}

func cmdLs(c *cli.Context) error {
	if err := nargs(c, 0, 0); err != nil {
		return err
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	hashes, err := s.ListAllContent(c.Context)
	if err != nil {
		return err
	}
	asJSON := c.Bool("json")
	rows := make([]blobEntry, 0, len(hashes))
	for _, h := range hashes {
		bi, err := s.Stat(c.Context, h)
		if errors.Is(err, store.ErrNotFound) {
			continue // removed since listed
		}
		if err != nil {
			return err
		}
		if asJSON {
			rows = append(rows, blobEntry{h.String(), bi.Size})
			continue
		}
		fmt.Fprintf(c.App.Writer, "%s %d\n", h, bi.Size)
	}
	if asJSON {
		return printJSON(c.App.Writer, rows)
	}
	return nil
}

func cmdDu(c *cli.Context) error {
	if err := nargs(c, 0, 0); err != nil {
		return err
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	total, err := s.CalculateTotalSize(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, map[string]int64{"bytes": total})
	}
	fmt.Fprintf(c.App.Writer, "%d %s\n", total, humanSize(total))
	return nil
}

// humanSize formats bytes in binary units, as du -h does.
func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// chainRow is one event of chain --json.
type chainRow struct {
	Seq         int    `json:"seq"`
	Hash        string `json:"hash"`
	EventType   string `json:"event_type"`
	Timestamp   uint64 `json:"timestamp"`
	Description string `json:"description"`
}

func cmdChain(c *cli.Context) error {
	if err := nargs(c, 1, 1); err != nil {
		return err
	}
	id := c.Args().First()
	if !store.IsActorID(id) {
		return usagef("chain: %q is not an actor id (a lowercase UUID)", id)
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	links, broken, err := store.Chain(c.Context, s, id)
	if err != nil {
		return err
	}
	rows := make([]chainRow, len(links))
	for i, l := range links {
		rows[i] = chainRow{
			Seq: len(links) - i, Hash: l.Hash.String(), EventType: l.Event.EventType,
			Timestamp: l.Event.Timestamp, Description: l.Event.Description,
		}
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rows); err != nil {
			return err
		}
	} else {
		for _, r := range rows {
			fmt.Fprintf(c.App.Writer, "%06d %s %s %d %s\n", r.Seq, r.Hash, r.EventType, r.Timestamp, r.Description)
		}
	}
	if broken != nil {
		return fmt.Errorf("chain of %s is broken after %d events: %w", id, len(links), broken)
	}
	return nil
}

// progressFor returns a progress callback drawing a bar on a terminal, and
// nothing otherwise.
func progressFor(c *cli.Context, what string) (store.Progress, func()) {
	if !isTerminal(c.App.ErrWriter) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	return func(done, total int) {
			if bar == nil {
				bar = progressbar.NewOptions(total,
					progressbar.OptionSetWriter(c.App.ErrWriter),
					progressbar.OptionSetDescription(what),
					progressbar.OptionShowCount(),
					progressbar.OptionThrottle(100*time.Millisecond),
					progressbar.OptionClearOnFinish())
			}
			bar.Set(done)
		}, func() {
			if bar != nil {
				bar.Finish()
			}
		}
}

// verifier is a store fsck can check: a directory or a bucket.
type verifier interface {
	Verify(ctx context.Context, progress store.Progress) (*store.FsckReport, error)
}

var (
	_ verifier = (*store.Store)(nil)
	_ verifier = (*remote.Store)(nil)
)

// errProblems makes fsck exit 1 after printing its report.
var errProblems = errors.New("the store has problems")

func cmdFsck(c *cli.Context) error {
	if err := nargs(c, 0, 0); err != nil {
		return err
	}
	s, err := openStore(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	v, ok := s.(verifier)
	if !ok {
		return fmt.Errorf("fsck: BUG: %T cannot verify", s)
	}
	progress, done := progressFor(c, "fsck")
	rep, err := v.Verify(c.Context, progress)
	done()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		if err := printJSON(c.App.Writer, rep); err != nil {
			return err
		}
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintln(c.App.Writer, p)
		}
		problems := "problems"
		if len(rep.Problems) == 1 {
			problems = "problem"
		}
		fmt.Fprintf(c.App.ErrWriter, "checked %d blobs and %d labels: %d %s\n", rep.Blobs, rep.Labels, len(rep.Problems), problems)
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%w: %d found", errProblems, len(rep.Problems))
	}
	return nil
}

func cmdGC(c *cli.Context) error {
	if err := nargs(c, 0, 0); err != nil {
		return err
	}
	grace := c.Duration("grace")
	if grace < 0 {
		return usagef("gc: --grace %v is negative; 0 keeps no unreachable blob", grace)
	}
	s, err := openLocal(c, false)
	if err != nil {
		return err
	}
	defer s.Close()
	if grace == 0 {
		grace = -1 // --grace 0: no grace at all
	}
	progress, done := progressFor(c, "gc")
	var gcProgress store.Progress
	if progress != nil {
		gcProgress = func(n, _ int) { progress(n, -1) } // the total is not known ahead
	}
	rep, err := s.GC(c.Context, store.GCOptions{DryRun: c.Bool("dry-run"), Grace: grace, Progress: gcProgress})
	done()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, gcJSON(rep))
	}
	for _, h := range rep.Removed {
		fmt.Fprintln(c.App.Writer, h)
	}
	verb := "removed"
	if rep.DryRun {
		verb = "would remove"
	}
	fmt.Fprintf(c.App.ErrWriter, "%s %d blobs (%s) of %d; %d reachable, %d unreachable kept as younger than %s\n",
		verb, len(rep.Removed), humanSize(rep.Bytes), rep.Blobs, rep.Reachable, rep.Young, c.Duration("grace"))
	return nil
}

// gcReportJSON is gc --json: store.GCReport with the hashes as hex strings
// (a store.Hash alone would encode as an array of 20 numbers).
type gcReportJSON struct {
	Blobs     int      `json:"blobs"`
	Reachable int      `json:"reachable"`
	Young     int      `json:"kept_young"`
	Removed   []string `json:"removed"`
	Bytes     int64    `json:"bytes"`
	DryRun    bool     `json:"dry_run"`
}

func gcJSON(rep *store.GCReport) gcReportJSON {
	out := gcReportJSON{
		Blobs: rep.Blobs, Reachable: rep.Reachable, Young: rep.Young,
		Removed: make([]string, len(rep.Removed)), Bytes: rep.Bytes, DryRun: rep.DryRun,
	}
	for i, h := range rep.Removed {
		out.Removed[i] = h.String()
	}
	return out
}

func cmdSync(c *cli.Context) error {
	if err := nargs(c, 2, 2); err != nil {
		return err
	}
	if c.Int("jobs") < 1 {
		return usagef("sync: --jobs %d: want at least 1", c.Int("jobs"))
	}
	from, to := c.Args().Get(0), c.Args().Get(1)
	if from == to {
		return usagef("sync: FROM and TO are the same store")
	}
	if c.String("labels") != "" && remote.IsURL(from) && remote.IsURL(to) {
		return usagef("sync: --labels would be the labels of both buckets; sync through a directory")
	}
	labelsOf := func(where string) string {
		if remote.IsURL(where) {
			return c.String("labels")
		}
		return ""
	}
	src, err := openAt(c, from, false, labelsOf(from))
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := openAt(c, to, true, labelsOf(to))
	if err != nil {
		return err
	}
	defer dst.Close()
	progress, done := progressFor(c, "sync")
	rep, err := store.Copy(c.Context, src, dst, store.CopyOptions{Jobs: c.Int("jobs"), Progress: progress})
	done()
	if errors.Is(err, context.Canceled) {
		return errors.New("sync: interrupted; run it again to resume")
	}
	if err != nil {
		return fmt.Errorf("sync: %w (run it again to resume)", err)
	}
	if n := len(rep.Dropped); n > 0 {
		shown := rep.Dropped[:min(n, 5)]
		for i, name := range shown {
			shown[i] = strconv.Quote(name)
		}
		more := ""
		if n > len(shown) {
			more = fmt.Sprintf(" and %d more", n-len(shown))
		}
		fmt.Fprintf(c.App.ErrWriter, "sync: %d labels of %s held refs to blobs that only it has, and now hold %s's refs: %s%s\n",
			n, to, from, strings.Join(shown, ", "), more)
	}
	if c.Bool("json") {
		if rep.Dropped == nil {
			rep.Dropped = []string{}
		}
		return printJSON(c.App.Writer, rep)
	}
	fmt.Fprintf(c.App.ErrWriter, "copied %d blobs (%s) and %d labels; %d blobs and %d labels were there already\n",
		rep.Copied, humanSize(rep.Bytes), rep.LabelsCopied, rep.Blobs-rep.Copied, rep.Labels-rep.LabelsCopied)
	return nil
}
