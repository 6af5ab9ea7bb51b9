package nspawn

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const (
	// exitReboot is systemd-nspawn's exit status when the container asked for a reboot.
	exitReboot = 133
	// stopGrace is how long Stop waits for an orderly poweroff before killing.
	stopGrace = 30 * time.Second
	// sigPoweroff is SIGRTMIN+4 as systemd counts it (glibc's SIGRTMIN is 34): PID 1 starts
	// poweroff.target.
	sigPoweroff = syscall.Signal(34 + 4)
	// nspawnWrapper runs under `unshare -m --propagation private`: a private tmpfs on
	// /run/systemd/nspawn keeps nspawn from leaving directories in the host's /run (which is
	// not a tmpfs here); the mkdir leaves at most an empty directory.
	nspawnWrapper = `mkdir -p /run/systemd/nspawn && mount -t tmpfs tmpfs /run/systemd/nspawn && exec systemd-nspawn "$@"`
)

// loop boots the default deployment until the node powers off, is stopped or fails. It runs
// on a locked OS thread: the nspawn processes it forks get SIGTERM (an orderly container
// shutdown) if that thread dies, e.g. when the test binary is killed.
func (n *Node) loop() {
	runtime.LockOSThread()
	defer close(n.done)
	console, err := os.OpenFile(n.console, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		n.setErr(fmt.Errorf("nspawn: opening console log: %w", err))
		return
	}
	defer console.Close()
	defer func() {
		if err := unmountRun(n.opts.RunDir); err != nil {
			n.setErr(err)
		}
	}()
	for boot := 0; ; boot++ {
		n.mu.Lock()
		stopping := n.stopping
		n.mu.Unlock()
		if stopping {
			return
		}
		code, err := n.bootOnce(console, boot)
		n.mu.Lock()
		stopping, crashing := n.stopping, n.crashing
		n.crashing = false
		switch {
		case err != nil:
			n.loopErr = err
		case !stopping && (code == exitReboot || crashing):
			n.reboots++
			n.mu.Unlock()
			continue
		case code != 0 && !stopping:
			n.loopErr = fmt.Errorf("nspawn: systemd-nspawn exited with status %d; console tail:\n%s", code, n.consoleTail())
		}
		n.mu.Unlock()
		return
	}
}

func (n *Node) setErr(err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.loopErr = err
}

// bootOnce boots the current default deployment and waits for nspawn to exit, returning its
// exit status (-1 when killed by a signal).
func (n *Node) bootOnce(console io.Writer, boot int) (int, error) {
	dep, err := n.defaultDeployment()
	if err != nil {
		return 0, err
	}
	if err := freshRun(n.opts.RunDir); err != nil {
		return 0, err
	}
	args := append([]string{"-m", "--propagation", "private", "sh", "-c", nspawnWrapper, "systemd-nspawn"}, n.nspawnArgs(dep)...)
	fmt.Fprintf(console, "==== %s boot %d: %s\n", time.Now().Format(time.RFC3339Nano), boot, dep)
	cmd := exec.Command("unshare", args...) // unshare and sh exec: the PID is systemd-nspawn's
	cmd.Stdout, cmd.Stderr = console, console
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("nspawn: starting systemd-nspawn: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the status is read from cmd.ProcessState
		close(exited)
	}()
	n.mu.Lock()
	n.nspawnPID = cmd.Process.Pid
	n.pids = append(n.pids, cmd.Process.Pid)
	n.mu.Unlock()

	leader, bootID, err := n.findLeader(cmd.Process.Pid, exited)
	if err != nil {
		if kids, _ := childrenOf(cmd.Process.Pid); len(kids) > 0 { // a PID 1 that is not up yet
			for _, k := range kids {
				_ = killPID(k)
			}
		}
		_ = killPID(cmd.Process.Pid)
		<-exited
		n.clearBoot()
		return 0, fmt.Errorf("nspawn: boot %d of %s: %w; console tail:\n%s", boot, dep, err, n.consoleTail())
	}
	n.mu.Lock()
	n.leader, n.bootID, n.deployment = leader, bootID, dep
	n.pids = append(n.pids, leader)
	stopping := n.stopping
	n.notifyLocked()
	n.mu.Unlock()
	if stopping { // Stop came while this boot was starting
		_ = signalPoweroff(leader)
	}
	if n.opts.OnBoot != nil {
		n.opts.OnBoot(bootID)
	}
	<-exited
	if processAlive(leader) { // nspawn died without its container: do not leave it running
		_ = killPID(leader)
		waitGone(leader, 10*time.Second)
	}
	n.clearBoot()
	if n.opts.OnShutdown != nil {
		n.opts.OnShutdown()
	}
	return cmd.ProcessState.ExitCode(), nil
}

func (n *Node) clearBoot() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.leader, n.bootID, n.deployment, n.nspawnPID = 0, "", "", 0
	n.notifyLocked()
}

// defaultDeployment is what a bootloader would boot: the deployment of the BLS entry with
// the highest version (ostree= resolved through the boot.N symlinks).
func (n *Node) defaultDeployment() (string, error) {
	deps, err := n.sys.Deployments()
	if err != nil {
		return "", fmt.Errorf("nspawn: reading the boot entries: %w", err)
	}
	for _, d := range deps {
		if !d.Staged {
			return d.Path, nil
		}
	}
	return "", fmt.Errorf("nspawn: %s has no deployment to boot", n.sys.Path)
}

// nspawnArgs are systemd-nspawn's arguments for booting dep: the sysroot at /sysroot
// (norbind: the deployment's own mounts are not copied under it), the stateroot /var, /boot,
// /usr read-only as on a real ostree host (its files are hardlinks into the repositories,
// the cached base's included), and the host's /usr read-only at /run/host-usr (the tree has
// no ostree; see ExecOstree).
func (n *Node) nspawnArgs(dep string) []string {
	s := n.opts.Sysroot
	args := []string{
		"-D", dep, "-b", "--register=no", "--keep-unit", "--private-network", "--console=read-only",
		"--uuid=" + n.opts.MachineID, "--hostname=" + n.opts.Hostname, "--setenv=SYSTEMD_COLORS=0",
		"--bind=" + s + ":/sysroot:norbind",
		"--bind=" + filepath.Join(s, "ostree", "deploy", n.opts.OSName, "var") + ":/var",
		"--bind=" + filepath.Join(s, "boot") + ":/boot",
		"--bind-ro=" + filepath.Join(dep, "usr") + ":/usr",
	}
	if n.opts.RunDir != "" { // before the mounts below /run (nspawn also sorts them by path)
		// nspawn remounts its /run/host read-only at the end of the setup: it must stay a
		// mount point on top of the bound /run.
		args = append(args, "--bind="+n.opts.RunDir+":/run", "--tmpfs=/run/host:mode=0755")
	}
	args = append(args, "--bind-ro=/usr:/run/host-usr")
	for _, b := range n.opts.ExtraBinds {
		flag := "--bind="
		if b.ReadOnly {
			flag = "--bind-ro="
		}
		args = append(args, flag+b.Source+":"+b.Target)
	}
	return args
}

// findLeader waits for the container's PID 1: the child of nspawn that has exec'd systemd in
// its own PID namespace. It returns the PID and the boot ID that PID 1 sees.
func (n *Node) findLeader(nspawnPID int, exited <-chan struct{}) (int, string, error) {
	hostBootID, err := readTrimmed("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return 0, "", err
	}
	ownPIDNS, err := os.Readlink("/proc/self/ns/pid")
	if err != nil {
		return 0, "", fmt.Errorf("reading own PID namespace: %w", err)
	}
	deadline := time.After(n.opts.BootTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		kids, err := childrenOf(nspawnPID)
		if err != nil {
			return 0, "", err
		}
		for _, k := range kids {
			comm, _ := readTrimmed(fmt.Sprintf("/proc/%d/comm", k))
			ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", k))
			if comm != "systemd" || ns == "" || ns == ownPIDNS {
				continue
			}
			id, err := readTrimmed(fmt.Sprintf("/proc/%d/root/proc/sys/kernel/random/boot_id", k))
			if err == nil && id != "" && id != hostBootID {
				return k, id, nil
			}
		}
		select {
		case <-exited:
			return 0, "", errors.New("systemd-nspawn exited before PID 1 started")
		case <-deadline:
			return 0, "", fmt.Errorf("PID 1 (systemd) did not start within %s", n.opts.BootTimeout)
		case <-tick.C:
		}
	}
}

// consoleTail returns the last lines of the console log.
func (n *Node) consoleTail() string {
	data, err := os.ReadFile(n.console)
	if err != nil {
		return "(console log unreadable: " + err.Error() + ")"
	}
	return lastLines(strings.ReplaceAll(string(data), "\r", ""), 30)
}

// freshRun mounts a new tmpfs on dir ("" does nothing), detaching the previous boot's: the
// node's /run starts empty, and it is a tmpfs as systemd expects (journald, for one, refuses
// to delete its runtime journal from a disk file system and then never persists it).
func freshRun(dir string) error {
	if dir == "" {
		return nil
	}
	if err := unmountRun(dir); err != nil {
		return err
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755"); err != nil {
		return fmt.Errorf("nspawn: mounting a tmpfs for the node's /run on %s: %w", dir, err)
	}
	return nil
}

// unmountRun detaches every tmpfs freshRun left on dir ("" does nothing).
func unmountRun(dir string) error {
	if dir == "" {
		return nil
	}
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			return fmt.Errorf("nspawn: unmounting the node's /run %s: %w", mp, err)
		}
	}
	return nil
}

func signalPoweroff(pid int) error { return syscall.Kill(pid, sigPoweroff) }

func killPID(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("killing %d: %w", pid, err)
	}
	return nil
}
