package store

import (
	"errors"
	"fmt"
	"unicode/utf8"
)

// Sentinel errors. Every error the store returns wraps one of these (or a
// context error, or an I/O error from the operating system), so callers such
// as the FUSE layer can map them with errors.Is.
var (
	ErrNotFound     = errors.New("not found")
	ErrCorrupt      = errors.New("corrupt")
	ErrCollision    = errors.New("content carries a SHA-1 collision attack")
	ErrInvalidLabel = errors.New("invalid label name")
	ErrInvalidHash  = errors.New("not a SHA-1 hash (want 40 lowercase hex characters)")
	ErrAmbiguous    = errors.New("ambiguous: label holds more than one ref")
	ErrExists       = errors.New("already exists")
	ErrIsNamespace  = errors.New("is a label namespace")
	ErrNotNamespace = errors.New("is a label, not a namespace")
	ErrNotEmpty     = errors.New("label namespace not empty")
	ErrClosed       = errors.New("store is closed")
	ErrUnavailable  = errors.New("store unavailable")
	ErrCrossDevice  = errors.New("cannot be moved in place")
)

// Error records a failed store operation, the thing it was done to, and why,
// in the manner of os.PathError: "label team/x: not found".
type Error struct {
	Op   string // "label", "blob", "store", ...
	Name string // the label name, hash or path at fault
	Err  error
}

// maxShownName is how much of a name an error message shows.
const maxShownName = 200

func (e *Error) Error() string {
	if e.Name == "" {
		return e.Op + ": " + e.Err.Error()
	}
	name := e.Name
	if len(name) > maxShownName {
		// A name of kilobytes (refused as too long) is not echoed whole.
		cut := maxShownName
		for cut > 0 && !utf8.RuneStart(name[cut]) {
			cut-- // not inside a character
		}
		name = name[:cut] + "..."
	}
	return fmt.Sprintf("%s %q: %s", e.Op, name, e.Err.Error())
}

func (e *Error) Unwrap() error { return e.Err }

func labelErr(name string, err error) error { return &Error{Op: "label", Name: name, Err: err} }
func blobErr(h Hash, err error) error       { return &Error{Op: "blob", Name: h.String(), Err: err} }
