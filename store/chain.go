package store

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// ChainEvent is one event of an actor's chain as Theater stores it: the
// compact serde_json of its ChainEvent, stored before its own hash is known,
// so the blob's name is the event's hash.
type ChainEvent struct {
	Parent      *Hash  // nil at the root
	EventType   string // "message", "wasm", ...
	Data        []byte
	Timestamp   uint64
	Description string
}

// ParseChainEvent decodes an event blob tolerantly: unknown fields are
// ignored, "hash" may be filled in, "parent_hash" may be null, an array of
// 20 byte values, or a hex string, and "data" an array of byte values or a
// string. Anything else is an error, never a panic.
func ParseChainEvent(b []byte) (*ChainEvent, error) {
	var raw struct {
		ParentHash  json.RawMessage `json:"parent_hash"`
		EventType   string          `json:"event_type"`
		Data        json.RawMessage `json:"data"`
		Timestamp   uint64          `json:"timestamp"`
		Description *string         `json:"description"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("not a chain event: %w", err)
	}
	ev := &ChainEvent{EventType: raw.EventType, Timestamp: raw.Timestamp}
	if raw.Description != nil {
		ev.Description = *raw.Description
	}
	parent, err := decodeBytes(raw.ParentHash, true)
	if err != nil {
		return nil, fmt.Errorf("chain event parent_hash: %w", err)
	}
	if parent != nil {
		if len(parent) != len(Hash{}) {
			return nil, fmt.Errorf("chain event parent_hash: %d bytes, want 20", len(parent))
		}
		var h Hash
		copy(h[:], parent)
		ev.Parent = &h
	}
	if ev.Data, err = decodeBytes(raw.Data, false); err != nil {
		return nil, fmt.Errorf("chain event data: %w", err)
	}
	return ev, nil
}

// decodeBytes reads null, an array of byte values, or (for hashes) a hex
// string; a plain string is taken as its bytes.
func decodeBytes(raw json.RawMessage, hexString bool) ([]byte, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	switch s[0] {
	case '[':
		var nums []int
		if err := json.Unmarshal(raw, &nums); err != nil {
			return nil, err
		}
		out := make([]byte, len(nums))
		for i, n := range nums {
			if n < 0 || n > 255 {
				return nil, fmt.Errorf("value %d is not a byte", n)
			}
			out[i] = byte(n)
		}
		return out, nil
	case '"':
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return nil, err
		}
		if hexString {
			return hex.DecodeString(str)
		}
		return []byte(str), nil
	}
	return nil, errors.New("want null, an array of bytes or a string")
}

var actorIDRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// IsActorID reports whether s is a canonical lowercase UUID, the form of
// Theater's actor ids.
func IsActorID(s string) bool { return actorIDRe.MatchString(s) }

// ChainHeadLabel is the label naming an actor's newest event.
func ChainHeadLabel(actorID string) string { return actorID + ":chain-head" }

// ChainLink is one event of a walked chain.
type ChainLink struct {
	Hash  Hash
	Event *ChainEvent
}

// WalkChain follows parent_hash from head toward the root and returns the
// events newest first. The walk never trusts the store: a missing parent,
// an event that does not parse, or a cycle ends it; the reason is returned
// as broken (nil for a chain that reaches its root) alongside what was
// walked. At most limit events are walked (0 = no limit).
func (s *Store) WalkChain(ctx context.Context, head Hash, limit int) (links []ChainLink, broken error) {
	return WalkChain(ctx, s, head, limit)
}

// WalkChain is (*Store).WalkChain in any backend.
func WalkChain(ctx context.Context, b BlobOpener, head Hash, limit int) (links []ChainLink, broken error) {
	broken = VisitChain(ctx, b, head, func(l ChainLink) bool {
		links = append(links, l)
		return limit <= 0 || len(links) < limit
	})
	return links, broken
}

// VisitChain walks as WalkChain does, handing each event to visit as it
// is read, newest first, and holding none: a chain of any length costs
// the walk only the hashes it has seen. It stops where visit returns
// false, and returns why the chain ended early (nil at its root or where
// visit stopped it).
func (s *Store) VisitChain(ctx context.Context, head Hash, visit func(ChainLink) bool) (broken error) {
	return VisitChain(ctx, s, head, visit)
}

// VisitChain is (*Store).VisitChain in any backend.
func VisitChain(ctx context.Context, b BlobOpener, head Hash, visit func(ChainLink) bool) (broken error) {
	seen := map[Hash]struct{}{}
	for h := head; ; {
		if err := ctx.Err(); err != nil {
			return err
		}
		if _, ok := seen[h]; ok {
			return fmt.Errorf("cycle: event %s already seen", h)
		}
		seen[h] = struct{}{}
		ev, err := readEvent(ctx, b, h)
		if err != nil {
			return fmt.Errorf("event %s: %w", h, err)
		}
		if !visit(ChainLink{Hash: h, Event: ev}) || ev.Parent == nil {
			return nil
		}
		h = *ev.Parent
	}
}

// maxEvent bounds what is read of one chain event.
const maxEvent = 64 << 20

func readEvent(ctx context.Context, b BlobOpener, h Hash) (*ChainEvent, error) {
	data, err := readBlob(ctx, b, h, maxEvent)
	if err != nil {
		return nil, err
	}
	return ParseChainEvent(data)
}

// Chain returns an actor's events newest first, starting at its
// chain-head label (its newest ref, as the mount's chain/ does, should it
// hold more than one). A broken link ends the chain: the events before it
// are returned with the reason in broken, and the break is logged.
func (s *Store) Chain(ctx context.Context, actorID string) (links []ChainLink, broken error, err error) {
	links, broken, err = Chain(ctx, s, actorID)
	if broken != nil {
		s.log.Warn("actor chain is broken; it ends there", "actor", actorID, "reason", broken)
	}
	return links, broken, err
}

// Chain is (*Store).Chain in any backend, without the log line.
func Chain(ctx context.Context, b Backend, actorID string) (links []ChainLink, broken error, err error) {
	refs, err := b.GetByLabel(ctx, ChainHeadLabel(actorID))
	if err != nil {
		return nil, nil, err
	}
	if len(refs) == 0 {
		return nil, nil, labelErr(ChainHeadLabel(actorID), fmt.Errorf("%w: label holds no refs", ErrNotFound))
	}
	links, broken = WalkChain(ctx, b, refs[len(refs)-1], 0)
	return links, broken, nil
}
