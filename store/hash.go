package store

import (
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/pjbgf/sha1cd"
)

// Hash is the SHA-1 of a blob's content, the blob's name in data/.
type Hash [20]byte

// String returns the lowercase hex form used for file names and labels.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// IsZero reports whether h is the zero value.
func (h Hash) IsZero() bool { return h == Hash{} }

// IsHashName reports whether s is 40 lowercase hex characters, the only form
// a blob name takes. It does not allocate.
func IsHashName(s string) bool {
	if len(s) != 40 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ParseHash parses the 40 lowercase hex characters of a blob name.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if !IsHashName(s) {
		return h, &Error{Op: "hash", Name: s, Err: ErrInvalidHash}
	}
	hex.Decode(h[:], []byte(s))
	return h, nil
}

// collisionSummer is the part of sha1cd's digest that reports a detected
// collision attack alongside the sum.
type collisionSummer interface {
	hash.Hash
	CollisionResistantSum(b []byte) ([]byte, bool)
}

// Hasher computes a collision-detecting SHA-1 incrementally.
type Hasher struct{ d collisionSummer }

// NewHasher returns a Hasher ready for writing.
func NewHasher() *Hasher { return &Hasher{d: sha1cd.New().(collisionSummer)} }

// Write adds p to the running hash. It never fails.
func (h *Hasher) Write(p []byte) (int, error) { return h.d.Write(p) }

// Reset forgets everything written.
func (h *Hasher) Reset() { h.d.Reset() }

// Sum returns the hash of everything written, or ErrCollision when the
// content carries a SHAttered-style collision attack.
func (h *Hasher) Sum() (Hash, error) {
	var out Hash
	b, col := h.d.CollisionResistantSum(nil)
	copy(out[:], b)
	if col {
		return out, ErrCollision
	}
	return out, nil
}

// Sum hashes b with collision detection.
func Sum(b []byte) (Hash, error) {
	h := NewHasher()
	h.Write(b)
	return h.Sum()
}

// hashBufs are HashReader's buffers: a blob verified on its first read is
// usually small, and a fresh megabyte for each cost more than its hashing
// (a first walk of a 20,000-event chain spent its time zeroing them).
var hashBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// HashReader hashes everything r yields.
func HashReader(r io.Reader) (Hash, int64, error) {
	h := NewHasher()
	buf := hashBufs.Get().(*[]byte)
	defer hashBufs.Put(buf)
	n, err := io.CopyBuffer(h, r, *buf)
	if err != nil {
		return Hash{}, n, fmt.Errorf("hashing: %w", err)
	}
	sum, err := h.Sum()
	return sum, n, err
}
