package hostfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"unicode/utf8"
)

// Kind is the type of a filesystem entry.
type Kind string

// Kinds. Special kinds (fifo, socket, device) are reported, never read.
const (
	KindFile    Kind = "file"
	KindDir     Kind = "dir"
	KindSymlink Kind = "symlink"
	KindFIFO    Kind = "fifo"
	KindSocket  Kind = "socket"
	KindDevice  Kind = "device"
)

// Special reports whether k is a kind hostfs never reads.
func (k Kind) Special() bool { return k == KindFIFO || k == KindSocket || k == KindDevice }

// Meta is what hostfs knows of one entry.
type Meta struct {
	Kind   Kind   `json:"kind"`
	Mode   uint32 `json:"mode"` // permission bits incl. setuid/setgid/sticky
	UID    uint32 `json:"uid"`
	GID    uint32 `json:"gid"`
	Size   int64  `json:"size,omitempty"`
	Target string `json:"target,omitempty"` // symlink target (escaped like paths)
	SHA256 string `json:"sha256,omitempty"` // regular files, when read
	target string // raw symlink target
}

// budget counts entries visited and bytes read against the limits.
type budget struct {
	limits       Limits
	files, bytes int64
	hit          string
}

func (b *budget) exhausted() bool { return b.hit != "" }

// visit counts one entry; false once the entry limit is reached.
func (b *budget) visit() bool {
	if b.hit != "" {
		return false
	}
	if b.files >= b.limits.MaxFiles {
		b.hit = fmt.Sprintf("max-files: stopped after %d entries", b.files)
		return false
	}
	b.files++
	return true
}

// read reserves n content bytes; false once the byte limit would be passed.
func (b *budget) read(n int64) bool {
	if b.hit != "" {
		return false
	}
	if b.bytes+n > b.limits.MaxBytes {
		b.hit = fmt.Sprintf("max-bytes: stopped after %d bytes (next file %d bytes)", b.bytes, n)
		return false
	}
	b.bytes += n
	return true
}

// lstat describes name in r without following a symlink and without
// reading content.
func lstat(r *os.Root, name string) (*Meta, error) {
	fi, err := r.Lstat(name)
	if err != nil {
		return nil, err
	}
	m := metaOf(fi)
	if m.Kind == KindSymlink {
		t, err := r.Readlink(name)
		if err != nil {
			return nil, fmt.Errorf("readlink %s: %w", Escape(name), err)
		}
		m.target, m.Target = t, Escape(t)
	}
	return m, nil
}

func metaOf(fi fs.FileInfo) *Meta {
	m := &Meta{Mode: uint32(fi.Mode().Perm())}
	mode := fi.Mode()
	if mode&fs.ModeSetuid != 0 {
		m.Mode |= 0o4000
	}
	if mode&fs.ModeSetgid != 0 {
		m.Mode |= 0o2000
	}
	if mode&fs.ModeSticky != 0 {
		m.Mode |= 0o1000
	}
	switch {
	case mode.IsRegular():
		m.Kind, m.Size = KindFile, fi.Size()
	case mode.IsDir():
		m.Kind = KindDir
	case mode&fs.ModeSymlink != 0:
		m.Kind = KindSymlink
	case mode&fs.ModeNamedPipe != 0:
		m.Kind = KindFIFO
	case mode&fs.ModeSocket != 0:
		m.Kind = KindSocket
	default:
		m.Kind = KindDevice
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		m.UID, m.GID = st.Uid, st.Gid
	}
	return m
}

// hash reads the regular file name in r (O_NOFOLLOW|O_NONBLOCK, checked to
// be the regular file lstat saw) and sets m.SHA256. It returns false when
// the byte budget is exhausted.
func hash(r *os.Root, name string, m *Meta, b *budget) (bool, error) {
	if m.Kind != KindFile || m.SHA256 != "" {
		return true, nil
	}
	if !b.read(m.Size) {
		return false, nil
	}
	f, err := openRegular(r, name)
	if err != nil {
		return true, err
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, io.LimitReader(f, m.Size)); err != nil {
		return true, fmt.Errorf("read %s: %w", Escape(name), err)
	}
	m.SHA256 = hex.EncodeToString(sum.Sum(nil))
	return true, nil
}

// readRegular reads at most max bytes of the regular file name in r
// without following a symlink or blocking on a FIFO.
func readRegular(r *os.Root, name string, max int64) ([]byte, error) {
	f, err := openRegular(r, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", Escape(name), err)
	}
	return data, nil
}

// openRegular opens name in r for reading, refusing anything but a
// regular file (O_NOFOLLOW|O_NONBLOCK, then checked with fstat).
func openRegular(r *os.Root, name string) (*os.File, error) {
	f, err := r.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", Escape(name), err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", Escape(name), err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", Escape(name))
	}
	return f, nil
}

// readDirNames lists dir in r, sorted; a missing dir lists nothing.
func readDirNames(r *os.Root, dir string) ([]string, error) {
	f, err := r.OpenFile(dir, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_DIRECTORY, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("open dir %s: %w", Escape(dir), err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read dir %s: %w", Escape(dir), err)
	}
	sort.Strings(names)
	return names, nil
}

// join is a root-relative path join ("" is the root).
func join(dir, name string) string {
	if dir == "" || dir == "." {
		return name
	}
	return dir + "/" + name
}

// Escape returns p unchanged when it is printable UTF-8 without
// backslashes, otherwise its Go-quoted form without the outer quotes
// (e.g. "caf\xe9.conf"). Unescape reverses it.
func Escape(p string) string {
	if utf8.ValidString(p) && !strings.ContainsAny(p, `\"`) && strings.IndexFunc(p, notPrint) < 0 {
		return p
	}
	q := strconv.Quote(p)
	return q[1 : len(q)-1]
}

func notPrint(r rune) bool { return !strconv.IsPrint(r) }

// NeedsEscape reports whether Escape changes p.
func NeedsEscape(p string) bool { return Escape(p) != p }

// Unescape reverses Escape for a path that was escaped.
func Unescape(p string) (string, error) {
	s, err := strconv.Unquote(`"` + p + `"`)
	if err != nil {
		return "", fmt.Errorf("unescape %q: %w", p, err)
	}
	return s, nil
}
