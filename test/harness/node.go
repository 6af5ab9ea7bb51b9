package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"go.podman.io/image/v5/docker"

	"layerd.dev/layerd/test/dbusd"
	"layerd.dev/layerd/test/kubelet"
	"layerd.dev/layerd/test/nspawn"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/ostreesys"
	"layerd.dev/layerd/test/rpmostreed/backend"
)

// Node is one simulated node: a libostree sysroot, the node's /run (holding its system bus and
// rpm-ostree's transaction socket), the rpm-ostreed stand-in on that bus, a kubelet stand-in
// for its Node object, and the pods the harness runs on it.
//
// A directory-tier node is simulated around its sysroot: a private dbus-daemon and the
// stand-in run on the host, and a reboot is performed by the harness (backend.Boot). A
// booted-tier node (BootedTier) really boots its deployment under systemd-nspawn: its bus is
// the node's own dbus-daemon, the stand-in runs inside as rpm-ostreed.service, and a reboot is
// systemd's (see booted.go).
type Node struct {
	Name string
	Dir  string
	// Sysroot is the node's sysroot; its RunDir is the node's, so Deployments lists the
	// staged deployment too.
	Sysroot *ostreesys.Sysroot
	// RunDir is the node's /run as a host directory. It is emptied at every reboot, as a tmpfs
	// would be.
	RunDir  string
	Kubelet *kubelet.Kubelet

	w         *World
	mu        sync.Mutex // serializes reboots and pod changes
	bus       *dbusd.Bus
	standIn   *standIn
	kmu       sync.Mutex  // guards krun and removed
	krun      *kubeletRun // the running kubelet stand-in, or nil (StopKubelet, RemoveNode)
	pods      []*podSlot
	reboots   int
	lastBoot  backend.BootResult
	booted    *bootedNode // nil for a directory-tier node
	sysrootFS *sysrootFS  // the sysroot's own filesystem (Options.SysrootSize), or nil
	removed   bool        // World.RemoveNode: the Node is gone for good (kmu)
}

// addNode installs the base image into a new sysroot, boots it and starts the node's parts.
func (w *World) addNode(ctx context.Context, name string) (_ *Node, err error) {
	n := &Node{Name: name, Dir: filepath.Join(w.Dir, "nodes", name), w: w}
	n.RunDir = filepath.Join(n.Dir, "run")
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("node %s: %w", name, err), n.close())
		}
	}()
	if err := os.MkdirAll(n.RunDir, 0o755); err != nil {
		return nil, err
	}
	sysroot := filepath.Join(n.Dir, "sysroot")
	if w.opts.SysrootSize > 0 {
		if n.sysrootFS, err = mountSysrootFS(sysroot, w.opts.SysrootSize); err != nil {
			return nil, err
		}
	}
	began := time.Now()
	if n.Sysroot, err = ostreesys.Init(ctx, sysroot, w.opts.OSName); err != nil {
		return nil, err
	}
	n.Sysroot.RunDir = n.RunDir // Deployments lists the staged deployment too
	if err := n.install(ctx, w.Base, ostreesys.ContainerOrigin(w.Base.Pinned)); err != nil {
		return nil, err
	}
	w.logf("%s: base installed in %v", name, time.Since(began).Round(time.Millisecond))
	if n.lastBoot, err = backend.Boot(ctx, n.Sysroot.Path, n.RunDir); err != nil {
		return nil, err
	}
	if err := n.startServices(); err != nil {
		return nil, err
	}
	n.Kubelet = kubelet.New(w.Kube.Client, name, kubelet.Options{Labels: map[string]string{"layerd.dev/pool": "default"}})
	n.runKubelet()
	if err := n.waitHeartbeat(ctx, 0); err != nil {
		return nil, err
	}
	w.logf("%s up: booted %s", name, n.lastBoot.Booted.Checksum[:12])
	return n, nil
}

// install does what an installer does on a new machine: the image's content becomes the first
// deployment, recorded with a container origin as rpm-ostree would.
func (n *Node) install(ctx context.Context, img *osimage.Image, origin ostreesys.Origin) error {
	pinned := img.Pinned
	ref, err := docker.ParseReference("//" + pinned)
	if err != nil {
		return fmt.Errorf("installing %s: %w", pinned, err)
	}
	tree := filepath.Join(n.Dir, "install-tree")
	defer os.RemoveAll(tree)
	digest, err := ostreesys.FlattenImage(ctx, n.w.Trust.SystemContext(), ref, tree)
	if err != nil {
		return fmt.Errorf("installing %s: %w", pinned, err)
	}
	csum, err := n.Sysroot.CommitTree(ctx, tree, n.Sysroot.OSName+"/install", map[string]string{
		ostreesys.MetaManifestDigest: digest, ostreesys.MetaVersion: img.Version,
	})
	if err != nil {
		return fmt.Errorf("installing %s: %w", pinned, err)
	}
	if _, err := n.Sysroot.Deploy(ctx, csum, ostreesys.DeployOptions{Kargs: []string{"root=LABEL=root"}, Origin: &origin}); err != nil {
		return fmt.Errorf("installing %s: %w", pinned, err)
	}
	return nil
}

// startServices starts what runs on the node after boot: its system bus and the stand-in.
func (n *Node) startServices() error {
	var err error
	if n.bus, err = dbusd.Start(filepath.Join(n.RunDir, "dbus")); err != nil {
		return err
	}
	return n.launchStandIn()
}

// launchStandIn starts the rpm-ostreed stand-in on the node's bus (n.mu held).
func (n *Node) launchStandIn() error {
	var err error
	n.standIn, err = startStandIn(n.w.standin, standInArgs{
		busAddress: n.bus.Address(), sysroot: n.Sysroot.Path, osname: n.Sysroot.OSName, runDir: n.RunDir,
		trust: n.w.Trust, logPath: filepath.Join(n.Dir, fmt.Sprintf("rpmostreed.%d.log", n.reboots)),
	}, n.onStandInExit)
	return err
}

func (n *Node) stopServices() error {
	var errs []error
	if n.standIn != nil {
		errs = append(errs, n.standIn.stop())
		n.standIn = nil
	}
	if n.bus != nil {
		errs = append(errs, n.bus.Close())
		n.bus = nil
	}
	return errors.Join(errs...)
}

// BusAddress is the node's system bus (DBUS_SYSTEM_BUS_ADDRESS for a process outside its
// pods), or "" while the node is down.
func (n *Node) BusAddress() string {
	if n.booted != nil {
		if n.booted.nsp.BootID() == "" {
			return ""
		}
		return "unix:path=" + filepath.Join(n.RunDir, systemBusSocket)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.bus == nil {
		return ""
	}
	return n.bus.Address()
}

// Reboots counts the node's reboots (not what an agent claims): the ones the harness performed
// for a directory-tier node, the boots after the first for a booted-tier node.
func (n *Node) Reboots() int {
	if n.booted != nil {
		return n.booted.nsp.Reboots()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reboots
}

// LastBoot says what the last boot did (finalized a staged deployment, skipped a locked one...).
// Directory tier only: a booted-tier node's shutdown is in its journal
// (Journal(ctx, "-b", "-1", "-u", "ostree-finalize-staged.service")).
func (n *Node) LastBoot() backend.BootResult {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastBoot
}

// Booted is the deployment the node runs now.
func (n *Node) Booted() (backend.BootedDeployment, error) {
	if n.booted != nil {
		return n.booted.deployment()
	}
	return backend.Booted(n.Sysroot.Path, n.RunDir)
}

// BootedTier reports whether the node really boots (systemd-nspawn) rather than being
// simulated around its sysroot.
func (n *Node) BootedTier() bool { return n.booted != nil }

// Nspawn is a booted-tier node's container (Exec, ExecOstree, BootID, Crash...); nil for a
// directory-tier node.
func (n *Node) Nspawn() *nspawn.Node {
	if n.booted == nil {
		return nil
	}
	return n.booted.nsp
}

// Journal runs journalctl inside a booted-tier node with args (e.g. "-b", "-u", "rpm-ostreed").
// A directory-tier node has no journal: its stand-in logs to Dir/rpmostreed.N.log.
func (n *Node) Journal(ctx context.Context, args ...string) (string, error) {
	if n.booted == nil {
		return "", fmt.Errorf("node %s is a directory-tier node: it has no journal (see %s/rpmostreed.*.log)", n.Name, n.Dir)
	}
	return n.booted.nsp.Journal(ctx, args...)
}

// WaitRebooted waits until the node has rebooted at least reboots times (counted as Reboots
// does) and is up again: services running, pods restarted. Reboots requested through the
// stand-in (FinalizeDeployment, reboot: true) happen asynchronously; this waits for them.
func (n *Node) WaitRebooted(ctx context.Context, reboots int) error {
	if n.booted != nil {
		return n.waitUp(ctx, reboots)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for n.Reboots() < reboots {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %s to reboot: %w", n.Name, ctx.Err())
		case <-tick.C:
		}
	}
	n.mu.Lock() // a reboot in progress holds it until services and pods are back
	defer n.mu.Unlock()
	return nil
}

// Reboot reboots the node the way a host would: its pods stop, the Node goes NotReady, the
// stand-in and bus stop, shutdown finalizes an unlocked staged deployment, /run is emptied, the
// bootloader's default deployment boots with a new boot ID, then services and pods come back.
//
// A booted-tier node runs `systemctl reboot` inside: ostree-finalize-staged.service finalizes
// an unlocked staged deployment, nspawn exits 133 and the boot loop boots the default
// deployment; Reboot returns when its services are up again.
func (n *Node) Reboot(ctx context.Context) error {
	if n.booted != nil {
		before := n.booted.nsp.Reboots()
		if err := n.booted.nsp.Reboot(ctx); err != nil {
			return fmt.Errorf("rebooting %s: %w", n.Name, err)
		}
		return n.waitUp(ctx, before+1)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.rebootLocked(ctx)
}

func (n *Node) rebootLocked(ctx context.Context) error {
	n.w.logf("%s: rebooting", n.Name)
	n.Kubelet.SetNotReady(true)
	var errs []error
	for _, p := range n.pods {
		errs = append(errs, p.stop())
	}
	errs = append(errs, n.stopServices())
	res, err := backend.Boot(ctx, n.Sysroot.Path, n.RunDir)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("rebooting %s: %w", n.Name, err))...)
	}
	n.lastBoot = res
	n.reboots++
	n.Kubelet.NewBoot()
	if err := n.startServices(); err != nil {
		return errors.Join(append(errs, fmt.Errorf("rebooting %s: %w", n.Name, err))...)
	}
	n.Kubelet.SetNotReady(false)
	for _, p := range n.pods {
		errs = append(errs, p.start(n))
	}
	n.w.logf("%s: booted %s (finalized %v, skipped locked %v)", n.Name, res.Booted.Checksum[:12], res.Finalized, res.SkippedLocked)
	return errors.Join(errs...)
}

// onStandInExit is called when the stand-in exits by itself: exit code 133 asks for a reboot
// (as systemd-nspawn reports one), anything else is a crash left for the test to see.
func (n *Node) onStandInExit(s *standIn, code int) {
	if code != rebootExitCode {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.standIn != s { // already stopped or replaced by the harness
		return
	}
	n.standIn = nil
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := n.rebootLocked(ctx); err != nil {
		n.w.logf("%s: reboot failed: %v", n.Name, err)
	}
}

func (n *Node) close() error {
	n.mu.Lock()
	var errs []error
	for _, p := range n.pods {
		errs = append(errs, p.stop())
	}
	n.pods = nil
	errs = append(errs, n.stopServices())
	n.mu.Unlock()
	if n.booted != nil { // without n.mu: the shutdown is handled by the node's supervisor
		errs = append(errs, n.closeBooted())
	}
	n.stopKubeletRun()
	if n.sysrootFS != nil { // first: Remove then finds an empty mount point
		errs = append(errs, n.sysrootFS.unmount())
		n.sysrootFS = nil
	}
	if n.Sysroot != nil {
		errs = append(errs, n.Sysroot.Remove())
	}
	return errors.Join(errs...)
}
