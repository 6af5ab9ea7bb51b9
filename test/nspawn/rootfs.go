package nspawn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// Debootstrap parameters of the bootable base: a minimal Debian with systemd as PID 1,
// the system dbus-daemon and logind (notes §6).
const (
	debootstrapVariant = "minbase"
	debootstrapInclude = "systemd,systemd-sysv,dbus,libpam-systemd"
	// DefaultSuite is the Debian release of the base rootfs (the host's own release).
	DefaultSuite = "bookworm"
)

// RootfsOptions selects the cached debootstrap rootfs.
type RootfsOptions struct {
	// CacheDir defaults to DefaultCacheDir(); the rootfs goes to CacheDir/rootfs/<key>/root.
	CacheDir string
	// Suite defaults to DefaultSuite.
	Suite string
	// Mirror defaults to the machine's apt source for Suite (AptMirror("/etc/apt", Suite)).
	Mirror string
	// Log receives debootstrap's progress when it runs (nil: discarded; the full log is
	// kept next to the rootfs as debootstrap.log).
	Log io.Writer
}

// Rootfs is a cached debootstrap output. Its files are hardlinked into ostree trees built
// from it: treat it as read-only.
type Rootfs struct {
	Dir    string // the root directory
	Key    string // cache key (suite, mirror, variant, packages, arch)
	Mirror string
	Suite  string
}

// EnsureRootfs returns the cached bootable Debian rootfs, running debootstrap once when it is
// missing (≈ 40 s to several minutes, depending on the mirror; ≈ 240 MB). Concurrent callers
// wait on a lock and build it once.
func EnsureRootfs(ctx context.Context, o RootfsOptions) (*Rootfs, error) {
	if err := requireBinaries("debootstrap"); err != nil {
		return nil, err
	}
	if o.CacheDir == "" {
		d, err := DefaultCacheDir()
		if err != nil {
			return nil, err
		}
		o.CacheDir = d
	}
	if o.Suite == "" {
		o.Suite = DefaultSuite
	}
	if o.Mirror == "" {
		m, err := AptMirror("/etc/apt", o.Suite)
		if err != nil {
			return nil, fmt.Errorf("choosing the debootstrap mirror: %w", err)
		}
		o.Mirror = m
	}
	key := shortHash("debootstrap", debootstrapVariant, debootstrapInclude, o.Suite, o.Mirror, runtime.GOARCH)
	entry, err := cached(filepath.Join(o.CacheDir, "rootfs"), key, func(tmp string) error {
		return debootstrap(ctx, o, tmp)
	})
	if err != nil {
		return nil, fmt.Errorf("building the base rootfs (%s %s): %w", o.Suite, o.Mirror, err)
	}
	return &Rootfs{Dir: filepath.Join(entry, "root"), Key: key, Mirror: o.Mirror, Suite: o.Suite}, nil
}

// debootstrap installs the rootfs into tmp/root, logging to tmp/debootstrap.log.
func debootstrap(ctx context.Context, o RootfsOptions, tmp string) error {
	logf, err := os.Create(filepath.Join(tmp, "debootstrap.log"))
	if err != nil {
		return fmt.Errorf("creating debootstrap log: %w", err)
	}
	defer logf.Close()
	var out io.Writer = logf
	if o.Log != nil {
		out = io.MultiWriter(logf, o.Log)
	}
	var tail bytes.Buffer
	cmd := exec.CommandContext(ctx, "debootstrap", "--variant="+debootstrapVariant, "--include="+debootstrapInclude,
		o.Suite, filepath.Join(tmp, "root"), o.Mirror)
	cmd.Stdout = io.MultiWriter(out, &tail)
	cmd.Stderr = cmd.Stdout
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive", "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("debootstrap: %w: %s", err, lastLines(tail.String(), 10))
	}
	return nil
}

// shortHash is the first 12 hex digits of sha256 over parts (NUL-separated).
func shortHash(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:])[:12]
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// requireBinaries reports the named binaries missing from PATH.
func requireBinaries(names ...string) error {
	var missing []string
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("nspawn: missing %s (apt-get install -y systemd-container debootstrap ostree util-linux e2fsprogs)",
			strings.Join(missing, ", "))
	}
	return nil
}

// Prerequisites returns an error naming whatever the booted tier needs but this machine
// lacks: root and the binaries it runs. Tests call t.Fatal on it.
func Prerequisites() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("nspawn: the booted node tier needs root (mount and PID namespaces, chattr, systemd-nspawn)")
	}
	return requireBinaries("systemd-nspawn", "debootstrap", "ostree", "unshare", "nsenter", "chattr", "cp")
}
