// Package ostreesys builds and drives real libostree directory sysroots
// with the Debian `ostree` CLI (libostree 2022.7). It is test-world code:
// nothing is mounted, nothing is booted; ExecBooted fakes a boot with
// mount and PID namespaces. See docs/dev/test-world-api.md.
package ostreesys

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Sysroot is an ostree directory sysroot with one stateroot (OS name).
type Sysroot struct {
	// Path is the sysroot directory (it holds boot/ and ostree/).
	Path string
	// OSName is the stateroot used by Deploy and Deployments.
	OSName string
	// RunDir, when set, is the node's persistent /run: Deployments reads
	// RunDir/ostree/staged-deployment to report the staged deployment.
	RunDir string
}

// Open returns a handle on an existing sysroot without touching it.
func Open(path, osname string) *Sysroot {
	return &Sysroot{Path: path, OSName: osname}
}

// Init creates a sysroot at path (created if missing) with stateroot osname:
// `ostree admin init-fs`, bootloader=none, `ostree admin os-init`.
// On failure, whatever was created is removed again.
func Init(ctx context.Context, path, osname string) (_ *Sysroot, err error) {
	if osname == "" || strings.ContainsAny(osname, "/ \t\n") {
		return nil, fmt.Errorf("ostreesys: invalid osname %q", osname)
	}
	if err := requireTools(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("ostreesys: %w", err)
	}
	ents, err := os.ReadDir(abs)
	existed := err == nil
	if existed && len(ents) > 0 {
		return nil, fmt.Errorf("ostreesys: init %s: directory not empty", abs)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("ostreesys: create sysroot dir: %w", err)
	}
	s := &Sysroot{Path: abs, OSName: osname}
	defer func() {
		if err != nil {
			_ = s.Remove()
			if existed {
				_ = os.Mkdir(abs, 0o755)
			}
		}
	}()
	if _, err := run(ctx, "ostree", "admin", "init-fs", abs); err != nil {
		return nil, err
	}
	for _, kv := range [][2]string{
		{"sysroot.bootloader", "none"}, // never run grub-mkconfig (notes §2 pitfall 1)
		{"core.fsync", "false"},        // test speed; semantics unchanged
	} {
		if _, err := run(ctx, "ostree", "config", "--repo="+s.RepoPath(), "set", kv[0], kv[1]); err != nil {
			return nil, err
		}
	}
	if _, err := run(ctx, "ostree", "admin", "os-init", "--sysroot="+abs, osname); err != nil {
		return nil, err
	}
	return s, nil
}

// RepoPath is the sysroot's repository, <sysroot>/ostree/repo.
func (s *Sysroot) RepoPath() string { return filepath.Join(s.Path, "ostree", "repo") }

// StaterootDir is <sysroot>/ostree/deploy/<os>.
func (s *Sysroot) StaterootDir() string { return filepath.Join(s.Path, "ostree", "deploy", s.OSName) }

// StaterootVar is the stateroot's shared /var, <sysroot>/ostree/deploy/<os>/var.
func (s *Sysroot) StaterootVar() string { return filepath.Join(s.StaterootDir(), "var") }

// DeploymentDir is the checkout of d: <sysroot>/ostree/deploy/<os>/deploy/<csum>.<serial>.
func (s *Sysroot) DeploymentDir(d Deployment) string {
	osname := d.OSName
	if osname == "" {
		osname = s.OSName
	}
	return filepath.Join(s.Path, "ostree", "deploy", osname, "deploy", fmt.Sprintf("%s.%d", d.Checksum, d.Serial))
}

// Remove clears the immutable bit on every deployment root and deletes the
// whole sysroot directory.
func (s *Sysroot) Remove() error {
	if s == nil || s.Path == "" {
		return nil
	}
	var errs []error
	roots, _ := filepath.Glob(filepath.Join(s.Path, "ostree", "deploy", "*", "deploy", "*"))
	for _, r := range roots {
		fi, err := os.Lstat(r)
		if err != nil || !fi.IsDir() {
			continue
		}
		if out, err := exec.Command("chattr", "-i", r).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("chattr -i %s: %w: %s", r, err, bytes.TrimSpace(out)))
		}
	}
	if err := os.RemoveAll(s.Path); err != nil {
		errs = append(errs, fmt.Errorf("remove sysroot: %w", err))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("ostreesys: remove %s: %w", s.Path, err)
	}
	return nil
}

// requireTools reports which prerequisites of a real sysroot are missing.
func requireTools() error {
	var missing []string
	for _, b := range []string{"ostree", "chattr", "unshare", "mount", "chroot"} {
		if _, err := exec.LookPath(b); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("ostreesys: missing binaries %v (Debian packages ostree, e2fsprogs, util-linux, coreutils)", missing)
	}
	if os.Geteuid() != 0 {
		return errors.New("ostreesys: must run as root (ostree deploy, chattr, mount namespaces)")
	}
	return nil
}

// Prerequisites returns an error naming whatever a real sysroot needs but
// this machine lacks (root, binaries). Tests call t.Fatal on it.
func Prerequisites() error { return requireTools() }

// run executes a command and returns its stdout; the error carries stderr.
func run(ctx context.Context, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ostreesys: %s %s: %w: %s",
			name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
