package main

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// hoistFlags moves a command's flags ahead of its arguments, so that
// `mount MNT --read-only` and `put FILE --label L` work as the synopsis
// writes them: urfave/cli stops reading flags at the first argument.
// Global flags go before the command, wherever they are; everything after
// "--" stays an argument; an unknown flag is left where it is, for the
// parser to refuse.
func hoistFlags(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	// Shell completion asks with this flag last, and it must stay last
	// and never be taken for a flag's value: else the command runs.
	if last := args[len(args)-1]; last == "--generate-bash-completion" {
		return append(hoistFlags(app, args[:len(args)-1]), last)
	}
	// The command is the first word that is neither a global flag nor
	// the value of one.
	i := 1
	for i < len(args) && isFlag(args[i]) {
		i += flagWords(app.Flags, args[i:])
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	global := append([]string(nil), args[:i]...)
	var flags, words []string
	rest := args[i+1:]
	for j := 0; j < len(rest); {
		a := rest[j]
		switch {
		case a == "--":
			words = append(words, rest[j:]...)
			j = len(rest)
		case a == "-h" || a == "--help":
			// Help for the command, whatever else is on the line
			// (urfave would take an argument for a help topic).
			return append(global, args[i], a)
		case isFlag(a) && known(cmd.Flags, a):
			n := flagWords(cmd.Flags, rest[j:])
			if n > len(rest)-j {
				return args // its value is missing: the parser says so
			}
			flags = append(flags, rest[j:j+n]...)
			j += n
		case isFlag(a) && known(app.Flags, a):
			// A global flag after the command: `refs L --store DIR`.
			n := flagWords(app.Flags, rest[j:])
			if n > len(rest)-j {
				return args
			}
			global = append(global, rest[j:j+n]...)
			j += n
		default:
			words = append(words, a)
			j++
		}
	}
	out := append(global, args[i])
	out = append(out, flags...)
	return append(out, words...)
}

func isFlag(a string) bool { return len(a) > 1 && a[0] == '-' && a != "--" }

// flagName is a flag's name without its dashes and any "=value".
func flagName(a string) (name string, hasValue bool) {
	name = strings.TrimLeft(a, "-")
	name, _, hasValue = strings.Cut(name, "=")
	return name, hasValue
}

func lookupFlag(flags []cli.Flag, a string) cli.Flag {
	name, _ := flagName(a)
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	if name == "help" || name == "h" {
		return cli.HelpFlag
	}
	return nil
}

func known(flags []cli.Flag, a string) bool { return lookupFlag(flags, a) != nil }

// flagWords is how many words the flag at args[0] takes: two for one that
// takes a value given as the next word, else one.
func flagWords(flags []cli.Flag, args []string) int {
	f := lookupFlag(flags, args[0])
	if f == nil {
		return 1
	}
	if _, hasValue := flagName(args[0]); hasValue {
		return 1
	}
	if v, ok := f.(cli.DocGenerationFlag); ok && v.TakesValue() {
		return 2
	}
	return 1
}
