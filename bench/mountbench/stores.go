package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pjbgf/sha1cd"
)

// Stores are generated straight into data/ (named by the SHA-1 of their
// content, as Theater writes them), so a million blobs take seconds, not
// an hour of commits. A store is ready once its marker file, beside it,
// exists: a run interrupted while generating starts that store over, and
// a finished one is reused by the next run (-fresh regenerates).

// bigLabel is the label pointing at the large blob.
const bigLabel = "bench-big"

// smallSize is the size of each blob cat reads.
const smallSize = 4096

// cached returns the store (or file) called name under the store
// directory, generating it with gen unless its marker says it is ready.
// The marker holds what gen returned (a hash, for instance).
func (b *bench) cached(name string, gen func(path string) (string, error)) (path, info string, err error) {
	path = filepath.Join(b.storeDir, name)
	marker := path + ".ready"
	if !b.cfg.fresh {
		if data, err := os.ReadFile(marker); err == nil {
			return path, strings.TrimSpace(string(data)), nil
		}
	}
	os.Remove(marker)
	if err := os.RemoveAll(path); err != nil {
		return "", "", err
	}
	start := time.Now()
	b.progress("generating %s", path)
	info, err = gen(path)
	if err != nil {
		os.RemoveAll(path)
		return "", "", fmt.Errorf("generating %s: %w", name, err)
	}
	syscall.Sync()
	if err := os.WriteFile(marker, []byte(info+"\n"), 0o644); err != nil {
		return "", "", err
	}
	b.progress("generated %s in %.1f s", name, time.Since(start).Seconds())
	return path, info, nil
}

// makeStoreDirs makes an empty store's directories.
func makeStoreDirs(path string) error {
	for _, d := range []string{"data", "labels", "tmp"} {
		if err := os.MkdirAll(filepath.Join(path, d), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// bigStore is a store holding one blob of -size random bytes and the
// label bench-big pointing at it. It returns the store and the hash.
func (b *bench) bigStore() (string, string, error) {
	return b.cached("big-"+strconv.FormatInt(b.cfg.size, 10), func(path string) (string, error) {
		if err := makeStoreDirs(path); err != nil {
			return "", err
		}
		tmp := filepath.Join(path, "tmp", "bench-big")
		sum, err := b.writeRandom(tmp, b.cfg.size, 1)
		if err != nil {
			return "", err
		}
		if err := os.Rename(tmp, filepath.Join(path, "data", sum)); err != nil {
			return "", err
		}
		// As Theater writes a label: the hash, no trailing newline.
		if err := os.WriteFile(filepath.Join(path, "labels", bigLabel), []byte(sum), 0o644); err != nil {
			return "", err
		}
		return sum, nil
	})
}

// cpSource is a file of -size random bytes outside any store, copied into
// by-label/ by cp.
func (b *bench) cpSource() (string, error) {
	path, _, err := b.cached("src-"+strconv.FormatInt(b.cfg.size, 10), func(path string) (string, error) {
		return b.writeRandom(path, b.cfg.size, 2)
	})
	return path, err
}

// writeRandom writes size pseudo-random bytes to path, synced, and
// returns their SHA-1.
func (b *bench) writeRandom(path string, size int64, seed uint64) (string, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return "", err
	}
	defer f.Close()
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	src := rand.NewChaCha8(key)
	h := sha1cd.New()
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		if err := b.ctx.Err(); err != nil {
			return "", err
		}
		n := int64(len(buf))
		if left < n {
			n = left
		}
		src.Read(buf[:n])
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			return "", err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), f.Close()
}

// smallStore holds -small blobs of 4 KiB each.
func (b *bench) smallStore() (string, error) {
	path, _, err := b.cached(fmt.Sprintf("small-%dx%d", b.cfg.small, smallSize), func(path string) (string, error) {
		return "", b.generate(path, b.cfg.small, smallContent)
	})
	return path, err
}

// manyStore holds n tiny blobs, each the decimal form of its index.
func (b *bench) manyStore(n int) (string, error) {
	path, _, err := b.cached(fmt.Sprintf("many-%d", n), func(path string) (string, error) {
		return "", b.generate(path, n, func(i int, buf []byte) []byte {
			return strconv.AppendInt(buf[:0], int64(i), 10)
		})
	})
	return path, err
}

// smallContent is the i-th 4 KiB blob: its index, then pseudo-random
// bytes seeded by it.
func smallContent(i int, buf []byte) []byte {
	buf = slices.Grow(buf[:0], smallSize)[:smallSize]
	r := rand.New(rand.NewPCG(uint64(i), 0x5eed))
	for j := 0; j+8 <= smallSize; j += 8 {
		binary.LittleEndian.PutUint64(buf[j:], r.Uint64())
	}
	copy(buf, strconv.Itoa(i)+"\n")
	return buf
}

// generate writes n blobs into path/data, content(i) each, from several
// goroutines, showing progress.
func (b *bench) generate(path string, n int, content func(i int, buf []byte) []byte) error {
	if err := makeStoreDirs(path); err != nil {
		return err
	}
	data := filepath.Join(path, "data")
	var next, done atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				b.progress("  %d/%d blobs", done.Load(), n)
			}
		}
	}()
	for w := 0; w < 4; w++ {
		wg.Go(func() {
			var buf []byte
			name := make([]byte, 40)
			for {
				i := int(next.Add(1) - 1)
				if i >= n || b.ctx.Err() != nil {
					return
				}
				buf = content(i, buf)
				sum, _ := sha1cd.Sum(buf)
				hex.Encode(name, sum[:])
				if err := os.WriteFile(filepath.Join(data, string(name)), buf, 0o644); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	close(stop)
	if firstErr != nil {
		return firstErr
	}
	if err := b.ctx.Err(); err != nil {
		return err
	}
	if got := done.Load(); got != int64(n) {
		return fmt.Errorf("wrote %d of %d blobs", got, n)
	}
	return nil
}

// blobNames lists the names in a store's data/, sorted.
func blobNames(store string) ([]string, error) {
	d, err := os.Open(filepath.Join(store, "data"))
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil && err != io.EOF {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}
