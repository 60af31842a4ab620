package main

import (
	"slices"
	"strings"
	"testing"
)

func TestHoistFlags(t *testing.T) {
	app := newApp(strings.NewReader(""), &strings.Builder{}, &strings.Builder{})
	for _, c := range []struct{ in, want string }{
		// As the synopsis writes them: flags after the arguments.
		{"mount MNT --read-only --log-file F", "mount --read-only --log-file F MNT"},
		{"put FILE --label L --replace", "put --label L --replace FILE"},
		{"refs notes --json", "refs --json notes"},
		{"gc --dry-run --grace 2h", "gc --dry-run --grace 2h"},
		{"put --label=L FILE", "put --label=L FILE"},
		// Global flags go before the command, wherever they are.
		{"--store S refs L", "--store S refs L"},
		{"refs L --store S -v", "--store S -v refs L"},
		{"-v --log-format json ls --json", "-v --log-format json ls --json"},
		// After "--" everything is an argument; "-" is one too.
		{"unlabel -- -dash --json", "unlabel -- -dash --json"},
		{"put - --label L", "put --label L -"},
		// Unknown flags and commands are left for the parser to refuse.
		{"refs --nope L", "refs --nope L"},
		{"nosuch A --json", "nosuch A --json"},
		// A flag without its value is left for the parser to refuse,
		// not given the argument before it.
		{"put FILE --label", "put FILE --label"},
		{"refs L --store", "refs L --store"},
		// Shell completion's flag stays last, never a flag's value.
		{"put FILE --label --generate-bash-completion", "put FILE --label --generate-bash-completion"},
		{"mount MNT --read-only --generate-bash-completion", "mount --read-only MNT --generate-bash-completion"},
		{"refs L -h", "refs -h"},
		{"mount MNT --help --store S", "mount --help"},
		{"", ""},
	} {
		in := append([]string{"theater-storefs"}, strings.Fields(c.in)...)
		want := append([]string{"theater-storefs"}, strings.Fields(c.want)...)
		if got := hoistFlags(app, in); !slices.Equal(got, want) {
			t.Errorf("hoistFlags(%q) = %q, want %q", c.in, got[1:], want[1:])
		}
	}
}

// Flags after the arguments work end to end, as the synopsis shows them.
func TestFlagsAfterArguments(t *testing.T) {
	c := newCLI(t)
	if r := runCLI(t, "hello", "put", "-", "--label", "greeting", "--store", c.dir); r.code != 0 {
		t.Fatalf("put - --label greeting --store DIR: %s", r)
	}
	r := runCLI(t, "", "refs", "greeting", "--json", "--store", c.dir)
	if r.code != 0 || !strings.Contains(r.stdout, "[") {
		t.Fatalf("refs greeting --json --store DIR: %s", r)
	}
}
