package nspawn

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// containerEnv is the environment of commands run inside: the host's is not passed on.
func containerEnv() []string {
	return []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"LANG=C.UTF-8", "HOME=/root", "TERM=dumb", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0",
	}
}

// Command prepares args to run inside the running node (nsenter -t <leader> -a: all its
// namespaces, its root), with a minimal environment. The process is part of the node: it
// dies with the node's PID namespace.
func (n *Node) Command(ctx context.Context, args ...string) (*exec.Cmd, error) {
	if len(args) == 0 {
		return nil, fmt.Errorf("nspawn: command: no arguments")
	}
	leader := n.Leader()
	if leader == 0 {
		return nil, ErrStopped
	}
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(leader), "-a", "--"}, args...)...)
	cmd.Env = containerEnv()
	return cmd, nil
}

// Exec runs args inside the running node and returns stdout; the error carries stderr.
func (n *Node) Exec(ctx context.Context, args ...string) ([]byte, error) {
	cmd, err := n.Command(ctx, args...)
	if err != nil {
		return nil, err
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("nspawn: %s inside the node: %w: %s",
			strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// ExecOstree runs the host's ostree inside the node (the tree has none): /run/host-usr is the
// host's /usr, read-only, and its libraries are found through LD_LIBRARY_PATH (host and base
// are the same Debian release, so the container's glibc fits).
func (n *Node) ExecOstree(ctx context.Context, args ...string) ([]byte, error) {
	return n.Exec(ctx, append([]string{"env", "LD_LIBRARY_PATH=/run/host-usr/lib/" + n.libDir, "/run/host-usr/bin/ostree"}, args...)...)
}

// Journal runs journalctl inside the node with args (e.g. "-b", "-t", "layerd") and returns
// its output.
func (n *Node) Journal(ctx context.Context, args ...string) (string, error) {
	out, err := n.Exec(ctx, append([]string{"journalctl", "--no-pager", "--quiet"}, args...)...)
	return string(out), err
}

// SystemState is `systemctl is-system-running` inside the node ("starting", "running",
// "degraded", "stopping", ...).
func (n *Node) SystemState(ctx context.Context) (string, error) {
	out, err := n.Exec(ctx, "systemctl", "is-system-running")
	state := strings.TrimSpace(string(out))
	if state != "" { // non-running states exit non-zero but still print the state
		return state, nil
	}
	return "", err
}

// WaitRunning waits until systemd inside reports the boot complete: running or degraded.
func (n *Node) WaitRunning(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no PID 1"
	for {
		if n.Leader() != 0 {
			state, err := n.SystemState(ctx)
			switch {
			case state == "running" || state == "degraded":
				return nil
			case err != nil:
				last = err.Error()
			default:
				last = state
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nspawn: waiting for the node to run (last: %s): %w", last, ctx.Err())
		case <-n.done:
			return fmt.Errorf("nspawn: waiting for the node to run: %w", ErrStopped)
		case <-tick.C:
		}
	}
}
