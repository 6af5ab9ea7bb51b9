// Package hostfs previews what a staged ostree deployment will and will not
// change in a host's /etc and /var, and applies the /var and /etc policies.
//
// It reads deployments only through the read-only sysroot
// (<host-root>/sysroot) and reads and writes the live /etc and /var only
// through <host-root>/etc and <host-root>/var (DESIGN §3b). Every walk is
// bounded (entries and bytes), never follows a symlink, never reads a
// special file and keeps non-UTF-8 names intact (escaped in reports).
package hostfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"go.uber.org/zap"
)

// Default limits of one preview.
const (
	DefaultMaxFiles = 200_000
	DefaultMaxBytes = 512 << 20
)

// Limits bound one preview walk. Zero means the default.
type Limits struct {
	// MaxFiles is the number of directory entries (all trees together) a
	// preview may visit.
	MaxFiles int64
	// MaxBytes is the number of file content bytes a preview may read.
	MaxBytes int64
}

// Options are the dependencies of a Host.
type Options struct {
	// HostRoot is where the host's root is mounted (/host in the DaemonSet).
	HostRoot string
	Limits   Limits
	Log      *zap.Logger
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Host reads deployments and the live /etc and /var of one host.
type Host struct {
	sysroot, etc, vr string
	limits           Limits
	log              *zap.Logger
	now              func() time.Time
}

// New checks opts and returns a Host.
func New(opts Options) (*Host, error) {
	if opts.HostRoot == "" {
		return nil, errors.New("hostfs: HostRoot is empty")
	}
	if opts.Log == nil {
		return nil, errors.New("hostfs: Log is nil")
	}
	if opts.Limits.MaxFiles < 0 || opts.Limits.MaxBytes < 0 {
		return nil, fmt.Errorf("hostfs: negative limits %+v", opts.Limits)
	}
	if opts.Limits.MaxFiles == 0 {
		opts.Limits.MaxFiles = DefaultMaxFiles
	}
	if opts.Limits.MaxBytes == 0 {
		opts.Limits.MaxBytes = DefaultMaxBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	root, err := filepath.Abs(opts.HostRoot)
	if err != nil {
		return nil, fmt.Errorf("hostfs: host root: %w", err)
	}
	return &Host{
		sysroot: filepath.Join(root, "sysroot"),
		etc:     filepath.Join(root, "etc"),
		vr:      filepath.Join(root, "var"),
		limits:  opts.Limits,
		log:     opts.Log,
		now:     opts.Now,
	}, nil
}

// DeploymentRef names a deployment directory
// ostree/deploy/<OSName>/deploy/<Checksum>.<Serial> of the sysroot.
type DeploymentRef struct {
	OSName   string `json:"osname"`
	Checksum string `json:"checksum"`
	Serial   int    `json:"serial"`
}

func (d DeploymentRef) String() string {
	return fmt.Sprintf("%s/%s.%d", d.OSName, d.Checksum, d.Serial)
}

var (
	checksumRE = regexp.MustCompile(`^[0-9a-f]{64}$`)
	osnameRE   = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)
)

// dir is the deployment directory relative to the sysroot.
func (d DeploymentRef) dir() (string, error) {
	if !osnameRE.MatchString(d.OSName) || !checksumRE.MatchString(d.Checksum) || d.Serial < 0 {
		return "", fmt.Errorf("invalid deployment %s", d)
	}
	return fmt.Sprintf("ostree/deploy/%s/deploy/%s.%d", d.OSName, d.Checksum, d.Serial), nil
}

// openDeployment opens sub (e.g. "usr/etc") of deployment d as a root that
// no symlink can leave. A missing sub is (nil, nil).
func (h *Host) openDeployment(d DeploymentRef, sub string) (*os.Root, error) {
	dir, err := d.dir()
	if err != nil {
		return nil, err
	}
	sr, err := os.OpenRoot(h.sysroot)
	if err != nil {
		return nil, fmt.Errorf("opening sysroot: %w", err)
	}
	defer sr.Close()
	if _, err := sr.Lstat(dir); err != nil {
		return nil, fmt.Errorf("deployment %s: %w", d, err)
	}
	r, err := sr.OpenRoot(dir + "/" + sub)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("deployment %s: opening %s: %w", d, sub, err)
	}
	return r, nil
}

// openLive opens the live tree at path (h.etc or h.vr).
func openLive(path string) (*os.Root, error) {
	r, err := os.OpenRoot(path)
	if err != nil {
		return nil, fmt.Errorf("opening live %s: %w", path, err)
	}
	return r, nil
}
