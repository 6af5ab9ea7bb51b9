// Package backend is the real work of the rpm-ostreed stand-in: it stages,
// finalizes, rolls back and cleans up deployments of a libostree directory
// sysroot (Debian's ostree 2022.7 CLI in a fake boot, see test/ostreesys),
// pulls container images with go.podman.io/image/v5 under the node's
// signature policy, and reports deployments as rpm-ostree's D-Bus
// dictionaries. All state is read from disk on every call, so a restarted
// stand-in reports exactly what the previous one did.
package backend

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/test/ostreesys"
)

// Options configures New.
type Options struct {
	// Sysroot is the ostree sysroot directory (holding boot/ and ostree/).
	Sysroot string
	// OSName is the stateroot the OS object manages; "" means the one of the
	// booted deployment.
	OSName string
	// RunDir is the node's persistent /run (staged-deployment state,
	// finalization lock, boot marker, auth.json).
	RunDir string
	// RegistriesD, PolicyPath and RegistriesConf are the node's
	// containers-registries.d directory, containers-policy.json and
	// registries.conf; "" means the host defaults.
	RegistriesD    string
	PolicyPath     string
	RegistriesConf string
	// BlobInfoCacheDir keeps containers/image's blob cache out of the host's
	// /var/lib/containers; "" means <sysroot>/ostree/repo/tmp/blob-info-cache.
	BlobInfoCacheDir string
	// Native means the stand-in runs on a really booted ostree system (the
	// booted tier): the booted deployment is the one "/" is, and ostree
	// commands run directly instead of in the directory tier's fake boot.
	// New sets it by itself when "/" is one of the sysroot's deployments.
	Native bool
	// Reboot is called by Reboot (after FinalizeDeployment or reboot: true).
	// nil: nothing happens beyond what the server records.
	Reboot func(ctx context.Context) error
}

// Backend implements the stand-in server's Backend on a real sysroot.
type Backend struct {
	opts   Options
	sys    *ostreesys.Sysroot
	reader *stateReader
	// opMu serializes operations; diskMu keeps readers from seeing the
	// sysroot half-written by this process (pulls run without it).
	opMu   sync.Mutex
	diskMu sync.RWMutex
}

// New checks the sysroot and returns a backend for it.
func New(opts Options) (*Backend, error) {
	if opts.Sysroot == "" {
		return nil, errors.New("backend: Sysroot is required")
	}
	if opts.RunDir == "" {
		opts.RunDir = "/run"
	}
	var err error
	if opts.Sysroot, err = filepath.Abs(opts.Sysroot); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if opts.RunDir, err = filepath.Abs(opts.RunDir); err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	if fi, err := os.Stat(filepath.Join(opts.Sysroot, "ostree", "repo")); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("backend: %s is not an ostree sysroot (no ostree/repo)", opts.Sysroot)
	}
	if err := os.MkdirAll(opts.RunDir, 0o755); err != nil {
		return nil, fmt.Errorf("backend: run dir: %w", err)
	}
	if opts.BlobInfoCacheDir == "" {
		opts.BlobInfoCacheDir = filepath.Join(opts.Sysroot, "ostree", "repo", "tmp", "blob-info-cache")
	}
	b := &Backend{opts: opts, reader: newStateReader(opts.Sysroot, opts.RunDir)}
	st, err := b.reader.read()
	if err != nil {
		return nil, fmt.Errorf("backend: %w", err)
	}
	// Running inside one of the sysroot's deployments is being booted, the
	// way libostree decides it (device and inode of "/").
	if bootedByInode(st.Deployments, "/") >= 0 {
		b.opts.Native = true
	}
	if b.opts.Native {
		b.reader.rootDir = "/"
		if st, err = b.reader.read(); err != nil {
			return nil, fmt.Errorf("backend: %w", err)
		}
	}
	if d := st.booted(); d != nil && b.opts.OSName == "" {
		b.opts.OSName = d.OSName
	}
	b.sys = ostreesys.Open(opts.Sysroot, b.opts.OSName)
	return b, nil
}

// OSName is the stateroot this backend stages into.
func (b *Backend) OSName() string { return b.opts.OSName }

// read returns the on-disk state, consistent with respect to this process.
func (b *Backend) read() (state, error) {
	b.diskMu.RLock()
	defer b.diskMu.RUnlock()
	return b.reader.read()
}

// Deployments returns Sysroot.Deployments (staged first, then boot order)
// and the index of the booted deployment (-1 when none).
func (b *Backend) Deployments(ctx context.Context) ([]map[string]dbus.Variant, int, error) {
	st, err := b.read()
	if err != nil {
		return nil, -1, fmt.Errorf("deployments: %w", err)
	}
	out := make([]map[string]dbus.Variant, len(st.Deployments))
	for i, d := range st.Deployments {
		out[i] = d.dict()
	}
	return out, st.Booted, nil
}

// OSNames lists the stateroots that have at least one deployment, plus the
// backend's own stateroot.
func (b *Backend) OSNames(ctx context.Context) ([]string, error) {
	st, err := b.read()
	if err != nil {
		return nil, fmt.Errorf("os names: %w", err)
	}
	seen := map[string]bool{}
	if b.opts.OSName != "" {
		seen[b.opts.OSName] = true
	}
	for _, d := range st.Deployments {
		seen[d.OSName] = true
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Reboot asks the node to reboot (Options.Reboot).
func (b *Backend) Reboot(ctx context.Context) error {
	if b.opts.Reboot == nil {
		return nil
	}
	if err := b.opts.Reboot(ctx); err != nil {
		return fmt.Errorf("reboot: %w", err)
	}
	return nil
}

// execBooted runs an ostree command as the booted system would: inside the
// fake boot of st's booted deployment, or directly when Native. It holds
// diskMu for writing.
func (b *Backend) execBooted(ctx context.Context, st state, args ...string) ([]byte, error) {
	booted := st.booted()
	if booted == nil {
		return nil, errors.New("Not currently booted into an OSTree system")
	}
	b.diskMu.Lock()
	defer b.diskMu.Unlock()
	if !b.opts.Native {
		return b.sys.ExecBooted(ctx, booted.Dir, b.opts.RunDir, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

// sysrootPathInBoot is where a file under the sysroot appears to commands
// run by execBooted.
func (b *Backend) sysrootPathInBoot(path string) string {
	if b.opts.Native {
		return path
	}
	rel, err := filepath.Rel(b.opts.Sysroot, path)
	if err != nil {
		return path
	}
	return filepath.Join("/sysroot", rel)
}
