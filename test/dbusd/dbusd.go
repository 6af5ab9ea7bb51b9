// Package dbusd runs a private dbus-daemon configured like a system bus,
// with rpm-ostree's bus policy installed (notes §3). Point processes at it
// with DBUS_SYSTEM_BUS_ADDRESS=Bus.Address().
package dbusd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Names used by the policy.
const (
	RPMOstreeName       = "org.projectatomic.rpmostree1"
	RPMOstreePolicyFile = "org.projectatomic.rpmostree1.conf"
	socketName          = "system_bus_socket"
	configName          = "system.conf"
	policyDirName       = "system.d"
	startTimeout        = 10 * time.Second
	stopTimeout         = 5 * time.Second
)

// Bus is a running private dbus-daemon.
type Bus struct {
	dir     string
	addr    string
	cmd     *exec.Cmd
	stderr  *syncBuffer
	done    chan struct{}
	waitErr error
	once    sync.Once
}

// Start runs `dbus-daemon --config-file=<dir>/system.conf --nofork
// --nopidfile --print-address=3` listening on <dir>/system_bus_socket, with
// <dir>/system.d/org.projectatomic.rpmostree1.conf as included policy.
// dir must exist and be traversable by every uid that is to connect.
func Start(dir string) (_ *Bus, err error) {
	bin, err := exec.LookPath("dbus-daemon")
	if err != nil {
		return nil, fmt.Errorf("dbusd: dbus-daemon not found (Debian package dbus-daemon): %w", err)
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("dbusd: %w", err)
	}
	b := &Bus{dir: dir, stderr: &syncBuffer{}, done: make(chan struct{})}
	if n := len(b.SocketPath()); n >= 108 {
		return nil, fmt.Errorf("dbusd: socket path %s is %d bytes, unix sockets allow 107", b.SocketPath(), n)
	}
	defer func() {
		if err != nil {
			_ = b.Close()
		}
	}()
	if err := os.MkdirAll(b.PolicyDir(), 0o755); err != nil {
		return nil, fmt.Errorf("dbusd: policy dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(b.PolicyDir(), RPMOstreePolicyFile), []byte(rpmOstreePolicy), 0o644); err != nil {
		return nil, fmt.Errorf("dbusd: write rpm-ostree policy: %w", err)
	}
	conf := fmt.Sprintf(systemConf, b.SocketPath(), b.PolicyDir())
	if err := os.WriteFile(b.ConfigPath(), []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("dbusd: write config: %w", err)
	}
	_ = os.Remove(b.SocketPath()) // stale socket from a crashed run

	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("dbusd: pipe: %w", err)
	}
	defer pr.Close()
	b.cmd = exec.Command(bin, "--config-file="+b.ConfigPath(), "--nofork", "--nopidfile", "--print-address=3")
	b.cmd.ExtraFiles = []*os.File{pw} // fd 3
	b.cmd.Stdout, b.cmd.Stderr = b.stderr, b.stderr
	b.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	err = b.cmd.Start()
	pw.Close()
	if err != nil {
		b.cmd = nil
		return nil, fmt.Errorf("dbusd: start dbus-daemon: %w", err)
	}
	go func() {
		b.waitErr = b.cmd.Wait()
		close(b.done)
	}()

	addrc := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(pr).ReadString('\n')
		addrc <- strings.TrimSpace(line)
	}()
	select {
	case b.addr = <-addrc:
	case <-time.After(startTimeout):
		return nil, fmt.Errorf("dbusd: no address from dbus-daemon after %v: %s", startTimeout, b.stderr)
	}
	if b.addr == "" {
		<-b.done
		return nil, fmt.Errorf("dbusd: dbus-daemon exited: %v: %s", b.waitErr, b.stderr)
	}
	return b, nil
}

// Address is the bus address printed by the daemon
// (unix:path=<dir>/system_bus_socket,guid=…), for DBUS_SYSTEM_BUS_ADDRESS.
func (b *Bus) Address() string { return b.addr }

// Env is "DBUS_SYSTEM_BUS_ADDRESS=<address>" for a child's environment.
func (b *Bus) Env() string { return "DBUS_SYSTEM_BUS_ADDRESS=" + b.addr }

// SocketPath is the listening unix socket.
func (b *Bus) SocketPath() string { return filepath.Join(b.dir, socketName) }

// ConfigPath is the generated bus configuration.
func (b *Bus) ConfigPath() string { return filepath.Join(b.dir, configName) }

// PolicyDir is the <includedir>: drop more *.conf files there, then Reload.
func (b *Bus) PolicyDir() string { return filepath.Join(b.dir, policyDirName) }

// PID is the daemon's process id (0 if not running).
func (b *Bus) PID() int {
	if b.cmd == nil || b.cmd.Process == nil {
		return 0
	}
	return b.cmd.Process.Pid
}

// Reload makes the daemon re-read its configuration (SIGHUP).
func (b *Bus) Reload() error {
	if b.PID() == 0 {
		return errors.New("dbusd: reload: not running")
	}
	if err := b.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		return fmt.Errorf("dbusd: reload: %w", err)
	}
	return nil
}

// Close stops the daemon (SIGTERM, SIGKILL after 5 s), waits for it and
// removes the files Start created. It is safe to call more than once.
func (b *Bus) Close() error {
	var errs []error
	b.once.Do(func() {
		if b.cmd != nil {
			_ = b.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-b.done:
			case <-time.After(stopTimeout):
				_ = b.cmd.Process.Kill()
				<-b.done
			}
		}
		for _, p := range []string{b.SocketPath(), b.ConfigPath(), b.PolicyDir()} {
			if err := os.RemoveAll(p); err != nil {
				errs = append(errs, err)
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("dbusd: close: %w", err)
	}
	return nil
}

// Log returns what the daemon wrote to stdout/stderr so far.
func (b *Bus) Log() string { return b.stderr.String() }

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.TrimSpace(s.b.String())
}
