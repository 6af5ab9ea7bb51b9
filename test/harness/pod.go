package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync/atomic"
	"syscall"
	"time"
)

// PodSpec describes a process run the way a DaemonSet pod runs on a node (DESIGN §3b): in its
// own mount namespace, with the node's /run at /run and the node's root at /host, the sysroot
// read-only at /host/sysroot and the node's /var at /host/var.
type PodSpec struct {
	// RunDir is the node's /run (holds the system bus socket and rpm-ostree's transaction socket).
	RunDir string
	// Root is the node's root filesystem (for a directory-tier node: its booted deployment).
	Root string
	// Var is the node's /var (the stateroot's shared var); empty leaves Root's var.
	Var string
	// Sysroot is the node's ostree sysroot, mounted read-only at /host/sysroot.
	Sysroot string
	// Path and Args are the program and its arguments (Args[0] is the program name).
	Path string
	Args []string
	Env  []string
	// Stdout and Stderr receive the process's output (nil discards it).
	Stdout, Stderr io.Writer
}

// mountScript builds the namespace: /host first (from the host's view of the paths), then /run
// last, because the node's /run hides the host's.
const mountScript = `set -e
mount --bind "$POD_ROOT" /host
if [ -n "$POD_VAR" ]; then mount --bind "$POD_VAR" /host/var; fi
mount --bind "$POD_SYSROOT" /host/sysroot
mount -o remount,bind,ro /host/sysroot
mount --bind "$POD_RUN" /run
exec "$@"`

// Pod is a running pod-like process.
type Pod struct {
	cmd     *exec.Cmd
	done    chan struct{}
	err     error
	stopped atomic.Bool // Stop or Kill was called
}

// StartPod starts spec's program in its own mount namespace. /host is created on the machine
// (an empty directory) when missing, as the mount point of every pod.
func StartPod(spec PodSpec) (*Pod, error) {
	for name, p := range map[string]string{"RunDir": spec.RunDir, "Root": spec.Root, "Sysroot": spec.Sysroot, "Path": spec.Path} {
		if p == "" {
			return nil, fmt.Errorf("starting pod: %s is empty", name)
		}
	}
	if err := os.MkdirAll("/host", 0o755); err != nil {
		return nil, fmt.Errorf("starting pod: creating /host mount point: %w", err)
	}
	args := append([]string{"-m", "--propagation", "private", "--", "/bin/sh", "-c", mountScript, "pod", spec.Path}, spec.Args[min(1, len(spec.Args)):]...)
	cmd := exec.Command("unshare", args...)
	cmd.Env = append(append(os.Environ(), spec.Env...),
		"POD_ROOT="+spec.Root, "POD_VAR="+spec.Var, "POD_SYSROOT="+spec.Sysroot, "POD_RUN="+spec.RunDir)
	cmd.Stdout, cmd.Stderr = spec.Stdout, spec.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting pod %s: %w", spec.Path, err)
	}
	p := &Pod{cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Pid is the pid of the namespace's first process (unshare, which execs the program).
func (p *Pod) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Pod) Done() <-chan struct{} { return p.done }

// Stopped reports whether Stop or Kill ended the pod (called by a test, or by the harness when
// the node reboots or the pod is removed) while it ran. A pod that is Done but not Stopped
// exited on its own. Read it after Done.
func (p *Pod) Stopped() bool { return p.stopped.Load() }

// Wait waits for the process and returns its exit error.
func (p *Pod) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Kill sends SIGKILL to the whole process group (a crash, as the harness's fault tests need) and
// waits for it to exit.
func (p *Pod) Kill() error {
	return p.signalAndWait(syscall.SIGKILL, 10*time.Second)
}

// Stop sends SIGTERM, waits up to grace, then SIGKILLs.
func (p *Pod) Stop(grace time.Duration) error {
	if err := p.signalAndWait(syscall.SIGTERM, grace); err == nil {
		return nil
	}
	return p.Kill()
}

func (p *Pod) signalAndWait(sig syscall.Signal, wait time.Duration) error {
	select {
	case <-p.done: // exited on its own before: not Stopped
		return nil
	default:
	}
	p.stopped.Store(true)
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signalling pod: %w", err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(wait):
		return fmt.Errorf("pod %d did not exit %v after %v", p.cmd.Process.Pid, wait, sig)
	}
}
