package store

import (
	"bytes"
	"fmt"
	"strings"
)

// Limits on label names, as the file systems under the store impose them.
const (
	MaxLabelLen     = 4096
	MaxComponentLen = 255
	// MaxLabelFile bounds how much of a label file is read: a label file
	// is a list of 41-byte lines, and a larger one is treated as corrupt.
	MaxLabelFile = 16 << 20
)

// ValidateLabel checks a label name: any bytes but NUL, '/' separating
// nested components, no empty, "." or ".." component, no leading '/',
// components of at most 255 bytes and the whole at most 4096.
func ValidateLabel(name string) error {
	bad := func(why string) error { return labelErr(name, fmt.Errorf("%w: %s", ErrInvalidLabel, why)) }
	switch {
	case name == "":
		return bad("empty")
	case len(name) > MaxLabelLen:
		return bad(fmt.Sprintf("longer than %d bytes", MaxLabelLen))
	case strings.IndexByte(name, 0) >= 0:
		return bad("contains a NUL byte")
	case name[0] == '/':
		return bad("starts with '/'")
	}
	for comp := range strings.SplitSeq(name, "/") {
		switch {
		case comp == "":
			return bad("empty path component")
		case comp == "." || comp == "..":
			return bad("path component " + comp)
		case len(comp) > MaxComponentLen:
			return bad(fmt.Sprintf("path component longer than %d bytes", MaxComponentLen))
		}
	}
	return nil
}

// ParseLabelFile reads the refs of a label file, oldest first. It is
// tolerant of what Theater and editors write: a trailing newline, CRLF line
// ends, blank lines, surrounding spaces. Lines that are not a hash are
// returned in bad (1-based line numbers) so the caller can report them; they
// never become refs.
func ParseLabelFile(b []byte) (refs []Hash, bad []int) {
	line := 0
	for len(b) > 0 {
		line++
		var l []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			l, b = b[:i], b[i+1:]
		} else {
			l, b = b, nil
		}
		l = bytes.TrimSpace(l)
		if len(l) == 0 {
			continue
		}
		h, err := ParseHash(string(l))
		if err != nil {
			bad = append(bad, line)
			continue
		}
		refs = append(refs, h)
	}
	return refs, bad
}

// FormatLabelFile writes refs as Theater does: joined by '\n', with no
// trailing newline.
func FormatLabelFile(refs []Hash) []byte {
	if len(refs) == 0 {
		return nil
	}
	b := make([]byte, 0, len(refs)*41)
	for i, h := range refs {
		if i > 0 {
			b = append(b, '\n')
		}
		b = append(b, h.String()...)
	}
	return b
}
