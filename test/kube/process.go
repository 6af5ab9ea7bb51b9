package kube

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopTimeout is how long a child gets between SIGTERM and SIGKILL.
const stopTimeout = 15 * time.Second

// process is one child (etcd, kube-apiserver, kube-controller-manager) with its log file.
// The child runs in its own process group and gets SIGKILL when the thread that forked it dies.
type process struct {
	name    string
	logPath string
	cmd     *exec.Cmd
	done    chan struct{} // closed once the child has been reaped
	waitErr error         // valid after done is closed
}

// startProcess starts bin with args, appending stdout and stderr to logPath. It deliberately
// does not use exec.CommandContext: the children outlive the context passed to Start.
func startProcess(name, bin string, args []string, logPath string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening %s log: %w", name, err)
	}
	fmt.Fprintf(logFile, "==== %s %s %s\n", time.Now().Format(time.RFC3339Nano), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = childEnv(os.Environ())
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, logPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}

// childEnv drops every ETCD_* variable: etcd reads them all as configuration.
func childEnv(env []string) []string {
	out := make([]string, 0, len(env))
	for _, kv := range env {
		if strings.HasPrefix(kv, "ETCD_") {
			continue
		}
		out = append(out, kv)
	}
	return out
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the child is gone, and if so an error describing how, with its log tail.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, fmt.Errorf("%s exited early (%v); log tail:\n%s", p.name, p.waitErr, p.logTail())
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the child's process group, waits, then falls back to SIGKILL.
func (p *process) stop() error {
	select {
	case <-p.done:
		return nil
	default:
	}
	pgid := p.pid()
	if err := syscall.Kill(-pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("sending SIGTERM to %s: %w", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(stopTimeout):
		if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("sending SIGKILL to %s: %w", p.name, err)
		}
		<-p.done
	}
	// Whatever else is left in the group (nothing, normally) goes too.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	return nil
}

// logTail returns the last lines of the child's log.
func (p *process) logTail() string { return fileTail(p.logPath, 25) }

func fileTail(path string, lines int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	defer f.Close()
	const max = 8 << 10
	if st, err := f.Stat(); err == nil && st.Size() > max {
		_, _ = f.Seek(st.Size()-max, io.SeekStart)
	}
	data, _ := io.ReadAll(f)
	parts := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return string(bytes.Join(parts, []byte("\n")))
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. Another process may take one
// before the child binds it; Start retries on "address already in use".
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func hostPort(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// addrInUse reports whether a failed child's log says a port was taken.
func addrInUse(p *process) bool {
	return strings.Contains(fileTail(p.logPath, 60), "address already in use")
}
