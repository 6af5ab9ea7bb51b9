package ostreesys

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// bootScript runs inside `unshare -m -p -f`: it assembles the fake booted
// root in DEP and chroots into it. Positional args: DEP SYSROOT VAR RUN cmd….
//
// Host /usr is bound read-only over DEP/usr: DEP/usr files are hardlinks into
// the repo, so nothing may ever write through it (notes §2 pitfall 3).
const bootScript = `set -e
DEP=$1 S=$2 V=$3 R=$4
shift 4
mount --make-rprivate /
mount --bind /usr "$DEP/usr"
mount -o remount,bind,ro "$DEP/usr"
mount --bind "$S" "$DEP/sysroot"
mount --bind "$S/boot" "$DEP/boot"
mount --bind "$V" "$DEP/var"
mount -t proc proc "$DEP/proc"
mount --rbind /dev "$DEP/dev"
mount -t tmpfs tmpfs "$DEP/tmp"
mount --bind "$R" "$DEP/run"
touch "$DEP/run/ostree-booted"
exec chroot "$DEP" "$@"
`

// ExecBooted runs args as if the machine were booted into deployDir (a
// deployment directory of this sysroot) with runDir as its persistent /run:
// under fresh mount and PID namespaces the host /usr (read-only) covers
// DEP/usr, the sysroot is DEP/sysroot, sysroot/boot is DEP/boot, the
// stateroot /var is DEP/var, runDir is DEP/run (so run/ostree/staged-deployment
// survives between calls), with a fresh /proc, /dev, a tmpfs /tmp and
// run/ostree-booted; then chroot DEP. DEP/etc is that node's live /etc.
// It returns stdout; the error carries stderr.
//
// Typical args: `ostree admin status`, `ostree admin deploy --stage REF`,
// `ostree admin finalize-staged`.
func (s *Sysroot) ExecBooted(ctx context.Context, deployDir, runDir string, args ...string) ([]byte, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("ostreesys: exec booted: no command")
	}
	dep, err := filepath.Abs(deployDir)
	if err != nil {
		return nil, fmt.Errorf("ostreesys: exec booted: %w", err)
	}
	deployRoot := filepath.Join(s.Path, "ostree", "deploy") + string(filepath.Separator)
	if !strings.HasPrefix(dep, deployRoot) || !deployDirRE.MatchString(filepath.Base(dep)) {
		return nil, fmt.Errorf("ostreesys: exec booted: %s is not a deployment of %s", dep, s.Path)
	}
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		return nil, fmt.Errorf("ostreesys: exec booted: run dir: %w", err)
	}
	run, err := filepath.Abs(runDir)
	if err != nil {
		return nil, fmt.Errorf("ostreesys: exec booted: %w", err)
	}
	for _, sub := range []string{"usr", "sysroot", "boot", "var", "proc", "dev", "tmp", "run"} {
		if fi, err := os.Stat(filepath.Join(dep, sub)); err != nil || !fi.IsDir() {
			return nil, fmt.Errorf("ostreesys: exec booted: %s/%s must be a directory (PrepareTree creates it)", dep, sub)
		}
	}
	stateVar := filepath.Join(filepath.Dir(filepath.Dir(dep)), "var")
	cmdArgs := append([]string{"-m", "-p", "-f", "--kill-child", "--propagation", "private",
		"sh", "-c", bootScript, "fakeboot", dep, s.Path, stateVar, run}, args...)
	cmd := exec.CommandContext(ctx, "unshare", cmdArgs...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", "HOME=/root", "TERM=dumb"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ostreesys: booted into %s: %s: %w: %s",
			filepath.Base(dep), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}
