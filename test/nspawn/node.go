// Package nspawn is the booted node tier of layerd's test world: an ostree deployment of a
// directory sysroot (test/ostreesys) booted under `systemd-nspawn -b` with real systemd,
// journald, the system dbus-daemon and logind inside. A reboot inside makes nspawn exit with
// 133 and the node boots the new default deployment, as a bootloader would (the highest BLS
// entry); ostree-finalize-staged.service finalizes a staged deployment at shutdown. The
// bootable base is a cached debootstrap rootfs (EnsureBase). Needs root.
// See docs/dev/test-world-api.md.
package nspawn

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"layerd.dev/layerd/test/ostreesys"
)

// Bind is an extra bind mount into the container (systemd-nspawn --bind / --bind-ro).
type Bind struct {
	Source   string // host path
	Target   string // path inside the container
	ReadOnly bool
}

// Options configures a booted node.
type Options struct {
	// Sysroot is the ostree sysroot directory; its default deployment is booted.
	Sysroot string
	// OSName is the stateroot (its /var becomes the node's /var).
	OSName string
	// WorkDir holds host-side files of the node (console.log). Required.
	WorkDir string
	// Hostname defaults to "layerd-node".
	Hostname string
	// MachineID (32 hex digits) defaults to one derived from Sysroot and OSName, so it stays
	// the same across reboots (journalctl --list-boots needs that).
	MachineID string
	// ExtraBinds are added to every boot.
	ExtraBinds []Bind
	// RunDir, when set, is a host directory that becomes the node's /run instead of nspawn's
	// own tmpfs: before every boot a fresh tmpfs is mounted on it (in the host's mount
	// namespace; unmounted when the node stops) and bound at /run. Processes outside the
	// container (a pod of the node) can then bind the node's /run, which they cannot from
	// /proc/<leader>/root/run: a mount of another mount namespace cannot be bind-mounted. It
	// must exist.
	RunDir string
	// OnBoot is called (from the boot loop) when a boot's PID 1 runs, with its boot ID.
	OnBoot func(bootID string)
	// OnShutdown is called (from the boot loop) when a boot has ended (nspawn exited).
	OnShutdown func()
	// BootTimeout bounds how long systemd-nspawn may take to start PID 1 (default 1 min).
	BootTimeout time.Duration
}

// ErrStopped is returned by waits on a node whose boot loop has ended.
var ErrStopped = errors.New("nspawn: node is not running")

// Node is a booted ostree deployment under systemd-nspawn, rebooted in a loop.
type Node struct {
	opts    Options
	sys     *ostreesys.Sysroot
	libDir  string // host multiarch lib dir holding libostree (see hostLibDir)
	console string // console.log path
	done    chan struct{}

	mu         sync.Mutex
	changed    chan struct{} // closed and replaced on every state change
	nspawnPID  int
	leader     int
	bootID     string
	deployment string
	reboots    int
	stopping   bool
	crashing   bool // a Crash is in progress: the next nspawn exit is a reset, not a failure
	pids       []int
	loopErr    error
}

// Start boots the sysroot's default deployment and returns once its PID 1 (systemd) runs.
// Use WaitRunning to wait for the boot to complete. The node runs until Stop (or a poweroff
// inside); ctx bounds only the start.
func Start(ctx context.Context, o Options) (*Node, error) {
	if err := Prerequisites(); err != nil {
		return nil, err
	}
	if o.Sysroot == "" || o.OSName == "" || o.WorkDir == "" {
		return nil, fmt.Errorf("nspawn: start: Sysroot, OSName and WorkDir are required")
	}
	abs, err := filepath.Abs(o.Sysroot)
	if err != nil {
		return nil, fmt.Errorf("nspawn: start: %w", err)
	}
	o.Sysroot = abs
	if o.Hostname == "" {
		o.Hostname = "layerd-node"
	}
	if o.MachineID == "" {
		h := sha256.Sum256([]byte("machine-id\x00" + o.Sysroot + "\x00" + o.OSName))
		o.MachineID = hex.EncodeToString(h[:16])
	}
	if o.BootTimeout == 0 {
		o.BootTimeout = time.Minute
	}
	for _, b := range append([]Bind{{Source: o.Sysroot}, {Source: o.WorkDir}, {Source: o.RunDir}}, o.ExtraBinds...) {
		if strings.Contains(b.Source+b.Target, ":") {
			return nil, fmt.Errorf("nspawn: start: path %q contains ':' (nspawn's bind separator)", b.Source+b.Target)
		}
	}
	libDir, err := hostLibDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("nspawn: start: %w", err)
	}
	n := &Node{
		opts:    o,
		sys:     ostreesys.Open(o.Sysroot, o.OSName),
		libDir:  libDir,
		console: filepath.Join(o.WorkDir, "console.log"),
		done:    make(chan struct{}),
		changed: make(chan struct{}),
	}
	go n.loop()
	if err := n.waitUntil(ctx, func() bool { return n.leader != 0 }); err != nil {
		return nil, errors.Join(fmt.Errorf("nspawn: start: %w", err), n.Stop(context.Background()))
	}
	return n, nil
}

// Leader is the container's PID 1 (a child of the systemd-nspawn process) in the host's PID
// namespace, or 0 between boots.
func (n *Node) Leader() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

// BootID is the current boot's ID as the node sees it (nspawn overmounts
// /proc/sys/kernel/random/boot_id with a fresh random ID per container boot; the host's
// differs), or "" between boots.
func (n *Node) BootID() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.bootID
}

// Deployment is the host path of the booted deployment, or "" between boots.
func (n *Node) Deployment() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.deployment
}

// Reboots counts the boots after the first: reboots requested inside (nspawn exit 133) and
// Crash resets.
func (n *Node) Reboots() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reboots
}

// Root is the host path of the running node's root directory (/proc/<leader>/root), or "".
func (n *Node) Root() string {
	if l := n.Leader(); l != 0 {
		return fmt.Sprintf("/proc/%d/root", l)
	}
	return ""
}

// RunDir is the host path of the running node's /run, or "" between boots: Options.RunDir
// when set, else /proc/<leader>/root/run (which changes with every boot: a new leader).
func (n *Node) RunDir() string {
	r := n.Root()
	switch {
	case r == "":
		return ""
	case n.opts.RunDir != "":
		return n.opts.RunDir
	}
	return r + "/run"
}

// BusAddress is the D-Bus address of the running node's system bus, reachable from the host,
// or "".
func (n *Node) BusAddress() string {
	if r := n.Root(); r != "" {
		return "unix:path=" + r + "/run/dbus/system_bus_socket"
	}
	return ""
}

// MachineID is the node's /etc/machine-id (nspawn's --uuid), the same for every boot.
func (n *Node) MachineID() string { return n.opts.MachineID }

// Sysroot is the node's sysroot handle.
func (n *Node) Sysroot() *ostreesys.Sysroot { return n.sys }

// ConsolePath is the file collecting the console output of every boot.
func (n *Node) ConsolePath() string { return n.console }

// Done is closed when the boot loop has ended (Stop, poweroff inside, or failure).
func (n *Node) Done() <-chan struct{} { return n.done }

// Reboot runs `systemctl reboot` inside and waits until the node is back with a new boot ID
// and systemd reports running (or degraded).
func (n *Node) Reboot(ctx context.Context) error {
	old := n.BootID()
	if old == "" {
		return fmt.Errorf("nspawn: reboot: %w", ErrStopped)
	}
	if _, err := n.Exec(ctx, "systemctl", "reboot"); err != nil {
		// systemctl may lose its connection once the shutdown has begun: that is success.
		if st, _ := n.SystemState(ctx); st != "stopping" && n.BootID() == old {
			return fmt.Errorf("nspawn: reboot: %w", err)
		}
	}
	return n.waitNewBoot(ctx, old)
}

// Crash resets the node like a power cut: its PID namespace is killed (no shutdown, so a
// staged deployment is not finalized) and the default deployment boots again. It waits
// until the new boot is running.
func (n *Node) Crash(ctx context.Context) error {
	n.mu.Lock()
	old, leader := n.bootID, n.leader
	if leader == 0 || n.stopping {
		n.mu.Unlock()
		return fmt.Errorf("nspawn: crash: %w", ErrStopped)
	}
	n.crashing = true
	n.mu.Unlock()
	if err := killPID(leader); err != nil {
		return fmt.Errorf("nspawn: crash: %w", err)
	}
	return n.waitNewBoot(ctx, old)
}

func (n *Node) waitNewBoot(ctx context.Context, old string) error {
	if err := n.waitUntil(ctx, func() bool { return n.bootID != "" && n.bootID != old }); err != nil {
		return fmt.Errorf("nspawn: waiting for the next boot: %w", err)
	}
	return n.WaitRunning(ctx)
}

// Stop powers the node off (SIGRTMIN+4 to PID 1, resent while it is not down) and waits for
// the boot loop to end; after stopGrace (or when ctx ends) the container's PID namespace is
// killed. It returns the boot loop's error, if any. Stop is idempotent.
func (n *Node) Stop(ctx context.Context) error {
	n.mu.Lock()
	n.stopping = true
	n.notifyLocked()
	n.mu.Unlock()
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for sent := false; ; {
		if l := n.Leader(); l != 0 && !sent {
			sent = signalPoweroff(l) == nil
		}
		select {
		case <-n.done:
			return n.err()
		case <-tick.C:
			sent = false
			continue
		case <-grace.C:
		case <-ctx.Done():
		}
		break
	}
	n.killAll()
	select {
	case <-n.done:
		return errors.Join(n.err(), fmt.Errorf("nspawn: stop: the node did not power off in time (%s or the context); killed", stopGrace))
	case <-time.After(10 * time.Second):
		return fmt.Errorf("nspawn: stop: node processes survive SIGKILL (pids %v)", n.allPIDs())
	}
}

func (n *Node) err() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.loopErr
}

func (n *Node) allPIDs() []int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]int(nil), n.pids...)
}

// killAll SIGKILLs the current leader (which kills its whole PID namespace) and nspawn.
func (n *Node) killAll() {
	n.mu.Lock()
	leader, nsp := n.leader, n.nspawnPID
	n.mu.Unlock()
	if leader != 0 {
		_ = killPID(leader)
	}
	if nsp != 0 {
		_ = killPID(nsp)
	}
}

func (n *Node) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// waitUntil waits until cond (evaluated with n.mu held) is true.
func (n *Node) waitUntil(ctx context.Context, cond func() bool) error {
	for {
		n.mu.Lock()
		ok, ch := cond(), n.changed
		n.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-n.done:
			n.mu.Lock()
			ok, err := cond(), n.loopErr
			n.mu.Unlock()
			if ok {
				return nil
			}
			return errors.Join(ErrStopped, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
