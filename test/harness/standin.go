package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"layerd.dev/layerd/test/osimage"
)

// rebootExitCode is how the rpm-ostreed stand-in asks for a reboot: it exits with the code
// systemd-nspawn uses when the machine inside asked to reboot.
const rebootExitCode = 133

// buildStandIn builds ./test/rpmostreed into dir with the project's build tags (GOFLAGS),
// statically (CGO_ENABLED=0): booted-tier nodes run the same binary inside their container.
func buildStandIn(ctx context.Context, dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "rpmostreed")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./test/rpmostreed")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building the rpm-ostreed stand-in: %w\n%s", err, b)
	}
	return out, nil
}

// runCmd runs a command and returns its stdout; the error carries stderr.
func runCmd(ctx context.Context, name string, args ...string) (string, error) {
	var stdout, stderr strings.Builder
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// moduleRoot finds the directory holding layerd's go.mod.
func moduleRoot() (string, error) {
	b, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("finding the module root: %w", err)
	}
	gomod := strings.TrimSpace(string(b))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("finding the module root: not inside layerd's module")
	}
	return filepath.Dir(gomod), nil
}

type standInArgs struct {
	busAddress, sysroot, osname, runDir string
	trust                               osimage.TrustFiles
	logPath                             string
}

// standIn is a running rpm-ostreed stand-in process.
type standIn struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	code int
}

// startStandIn starts the stand-in on the node's bus; onExit is called (in its own goroutine)
// when the process exits, with its exit code.
func startStandIn(bin string, a standInArgs, onExit func(*standIn, int)) (*standIn, error) {
	log, err := os.OpenFile(a.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("starting the stand-in: %w", err)
	}
	cmd := exec.Command(bin,
		"--bus-address", a.busAddress, "--sysroot", a.sysroot, "--osname", a.osname,
		"--run-dir", a.runDir, "--txn-socket", filepath.Join(a.runDir, "rpm-ostree-transaction.sock"),
		"--registries-d", a.trust.RegistriesDDir, "--policy", a.trust.PolicyPath,
		"--registries-conf", a.trust.RegistriesConfPath, "--exit-on-reboot")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, fmt.Errorf("starting the stand-in: %w", err)
	}
	s := &standIn{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		s.code = cmd.ProcessState.ExitCode()
		_ = err // the exit code carries what the harness needs
		log.Close()
		close(s.done)
		onExit(s, s.code)
	}()
	if err := waitForName(a.busAddress, 20*time.Second, s.done); err != nil {
		_ = s.stop()
		return nil, fmt.Errorf("starting the stand-in (log %s): %w", a.logPath, err)
	}
	return s, nil
}

// stop sends SIGTERM and waits, then SIGKILLs.
func (s *standIn) stop() error {
	select {
	case <-s.done:
		return nil
	default:
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.done:
		return nil
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
	return nil
}

// Crash kills the stand-in with SIGKILL (a daemon crash mid-transaction).
func (s *standIn) crash() {
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.done
}
