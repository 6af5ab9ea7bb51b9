package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/kubelet"
	"layerd.dev/layerd/test/nspawn"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/ostreesys"
	"layerd.dev/layerd/test/rpmostreed/backend"
)

// Paths inside a booted node. The node's host directory (binaries, trust files, the registry
// socket) is bound read-only at hostMount; its /run is the host directory Node.RunDir.
const (
	hostMount       = "/run/host-layerd"
	standInUnit     = "rpm-ostreed.service"
	registryProxy   = "layerd-registry-proxy"
	systemBusSocket = "dbus/system_bus_socket"
)

// bootedNode is the booted-tier part of a Node: its deployment really boots under
// systemd-nspawn. Boot and shutdown events of the boot loop are handled in order by one
// goroutine (supervise): after a boot it starts the node's services (the registry proxy and
// the rpm-ostreed stand-in as transient units inside), reports the Node Ready with the boot's
// ID and restarts the pods; at shutdown the Node goes NotReady and the pods stop.
type bootedNode struct {
	nsp     *nspawn.Node
	hostDir string
	fwd     *forwarder
	events  chan bootEvent
	stop    context.CancelFunc
	done    chan struct{}

	mu         sync.Mutex
	cancelBoot context.CancelFunc // ends the current boot's service start at shutdown
	upBootID   string             // the boot whose services are up ("" while down)
	upErr      error              // why the current boot's services failed to start
	upBoot     string             // the boot upErr belongs to
}

// bootEvent is a boot (bootID set) or a shutdown (bootID "").
type bootEvent struct{ bootID string }

// addBootedNode installs the booted tier's base image into a new sysroot and boots it under
// systemd-nspawn, then starts the node's parts.
func (w *World) addBootedNode(ctx context.Context, name string) (_ *Node, err error) {
	n := &Node{Name: name, Dir: filepath.Join(w.Dir, "nodes", name), w: w}
	n.RunDir = filepath.Join(n.Dir, "run")
	b := &bootedNode{hostDir: filepath.Join(n.Dir, "host"), events: make(chan bootEvent, 16), done: make(chan struct{})}
	n.booted = b
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("node %s: %w", name, err), n.close())
		}
	}()
	for _, d := range []string{n.RunDir, filepath.Join(b.hostDir, "bin")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	began := time.Now()
	if n.Sysroot, err = ostreesys.Init(ctx, filepath.Join(n.Dir, "sysroot"), w.opts.OSName); err != nil {
		return nil, err
	}
	n.Sysroot.RunDir = n.RunDir // Deployments lists the staged deployment too
	if err := n.installBootedBase(ctx); err != nil {
		return nil, err
	}
	w.logf("%s: installed %s in %v", name, w.BootedBase.Ref, time.Since(began).Round(time.Millisecond))
	if err := b.prepareHostDir(w); err != nil {
		return nil, err
	}
	if b.fwd, err = forwardUnix(filepath.Join(b.hostDir, "registry.sock"), w.Registry.Addr()); err != nil {
		return nil, err
	}
	n.Kubelet = kubelet.New(w.Kube.Client, name, kubelet.Options{Labels: map[string]string{"layerd.dev/pool": "default"}})
	n.Kubelet.SetNotReady(true)
	b.nsp, err = nspawn.Start(ctx, nspawn.Options{
		Sysroot: n.Sysroot.Path, OSName: n.Sysroot.OSName, WorkDir: filepath.Join(n.Dir, "nspawn"),
		Hostname: name, RunDir: n.RunDir,
		ExtraBinds: []nspawn.Bind{{Source: b.hostDir, Target: hostMount, ReadOnly: true}},
		OnBoot:     func(id string) { b.events <- bootEvent{bootID: id} },
		OnShutdown: b.onShutdown,
	})
	if err != nil {
		return nil, err
	}
	// The boot loop's events wait in the channel until the supervisor runs.
	sctx, stop := context.WithCancel(context.Background())
	b.stop = stop
	go n.supervise(sctx)
	if err := n.waitUp(ctx, 0); err != nil {
		return nil, err
	}
	n.runKubelet()
	if err := n.waitHeartbeat(ctx, 0); err != nil {
		return nil, err
	}
	w.logf("%s up (booted tier): boot %s, deployment %s", name, b.nsp.BootID(), filepath.Base(b.nsp.Deployment()))
	return n, nil
}

// installBootedBase makes BootedBase the node's first deployment, recorded with a container
// origin and the image's manifest digest as the directory tier's install does, without
// importing 150 MB again: the image is `ostree export` of the cached base commit, so its
// content is that commit's tree, which is committed anew with the image's metadata.
func (n *Node) installBootedBase(ctx context.Context) error {
	w := n.w
	img := w.BootedBase
	if _, err := runCmd(ctx, "ostree", "pull-local", "--repo="+n.Sysroot.RepoPath(), w.bootedBase.Repo, nspawn.BaseRef); err != nil {
		return fmt.Errorf("installing %s: %w", img.Pinned, err)
	}
	empty := filepath.Join(n.Dir, "install-overlay")
	if err := os.MkdirAll(empty, 0o755); err != nil {
		return fmt.Errorf("installing %s: %w", img.Pinned, err)
	}
	defer os.Remove(empty)
	csum, err := nspawn.CommitOverlay(ctx, n.Sysroot, nspawn.BaseRef, empty, n.Sysroot.OSName+"/install", map[string]string{
		ostreesys.MetaManifestDigest: img.Digest.String(), ostreesys.MetaVersion: img.Version,
	})
	if err != nil {
		return fmt.Errorf("installing %s: %w", img.Pinned, err)
	}
	origin := ostreesys.ContainerOrigin(img.Pinned)
	if _, err := n.Sysroot.Deploy(ctx, csum, ostreesys.DeployOptions{Kargs: []string{"root=LABEL=root"}, Origin: &origin}); err != nil {
		return fmt.Errorf("installing %s: %w", img.Pinned, err)
	}
	// Journals persist across reboots (journalctl --list-boots, -b -1).
	if err := os.MkdirAll(filepath.Join(n.Sysroot.StaterootVar(), "log", "journal"), 0o755); err != nil {
		return fmt.Errorf("installing %s: %w", img.Pinned, err)
	}
	return nil
}

// prepareHostDir fills the directory bound at hostMount: the stand-in binary (static), an
// ostree command running the host's ostree (the tree has none; the host's /usr is at
// /run/host-usr), and trust files whose policy names the key by its path inside.
func (b *bootedNode) prepareHostDir(w *World) error {
	bin := filepath.Join(b.hostDir, "bin")
	if err := os.Link(w.standin, filepath.Join(bin, "rpmostreed")); err != nil {
		return fmt.Errorf("installing the stand-in into %s: %w", bin, err)
	}
	libs, err := filepath.Glob("/usr/lib/*/libostree-1.so.1")
	if err != nil || len(libs) == 0 {
		return errors.New("the host's libostree-1.so.1 is not under /usr/lib/*/ (apt-get install -y ostree)")
	}
	wrapper := fmt.Sprintf("#!/bin/sh\n# The host's ostree (same Debian release as the node).\nLD_LIBRARY_PATH=/run/host-usr/lib/%s exec /run/host-usr/bin/ostree \"$@\"\n",
		filepath.Base(filepath.Dir(libs[0])))
	if err := os.WriteFile(filepath.Join(bin, "ostree"), []byte(wrapper), 0o755); err != nil {
		return fmt.Errorf("writing the ostree wrapper: %w", err)
	}
	trust := filepath.Join(b.hostDir, "trust")
	if err := os.MkdirAll(trust, 0o755); err != nil {
		return err
	}
	pub, err := os.ReadFile(w.Keys.PublicKeyPath)
	if err != nil {
		return fmt.Errorf("reading the public key: %w", err)
	}
	if err := os.WriteFile(filepath.Join(trust, "cosign.pub"), pub, 0o644); err != nil {
		return fmt.Errorf("writing the public key: %w", err)
	}
	inside := &osimage.Keys{PublicKeyPath: hostMount + "/trust/cosign.pub"}
	if _, err := osimage.WriteTrust(trust, w.Registry.Addr(), inside); err != nil {
		return fmt.Errorf("writing the booted node's trust files: %w", err)
	}
	return nil
}

// onShutdown runs in the boot loop when a boot has ended: the current service start is
// abandoned and the shutdown is queued behind it.
func (b *bootedNode) onShutdown() {
	b.mu.Lock()
	if b.cancelBoot != nil {
		b.cancelBoot()
	}
	b.mu.Unlock()
	b.events <- bootEvent{}
}

// supervise handles the boot loop's events in order until ctx ends.
func (n *Node) supervise(ctx context.Context) {
	b := n.booted
	defer close(b.done)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-b.events:
			if ev.bootID == "" {
				n.shutdownServices()
			} else {
				n.bootServices(ctx, ev.bootID)
			}
		}
	}
}

// bootServices reports the new boot ID, starts the node's services and, once they run,
// reports the Node Ready and restarts its pods.
func (n *Node) bootServices(ctx context.Context, bootID string) {
	b := n.booted
	if b.nsp.BootID() != bootID { // that boot has ended already; its successor has an event
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	b.mu.Lock()
	b.cancelBoot = cancel
	b.mu.Unlock()
	n.Kubelet.SetBootID(bootID)
	began := time.Now()
	err := b.startServices(ctx, n, bootID)
	var errs []error
	if err == nil {
		n.Kubelet.SetNotReady(false)
		n.mu.Lock()
		for _, p := range n.pods {
			errs = append(errs, p.start(n))
		}
		n.mu.Unlock()
	}
	b.mu.Lock()
	b.cancelBoot = nil
	b.upBoot, b.upErr = bootID, errors.Join(append(errs, err)...)
	if b.upErr == nil {
		b.upBootID = bootID
	}
	b.mu.Unlock()
	if err != nil {
		n.w.logf("%s: services of boot %s failed: %v", n.Name, bootID, err)
		return
	}
	n.w.logf("%s: boot %s up in %v (deployment %s)", n.Name, bootID, time.Since(began).Round(time.Millisecond), filepath.Base(b.nsp.Deployment()))
}

// shutdownServices reports the Node NotReady and stops its pods: the node has gone down.
func (n *Node) shutdownServices() {
	b := n.booted
	b.mu.Lock()
	b.upBootID = ""
	b.mu.Unlock()
	n.Kubelet.SetNotReady(true)
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pods {
		if err := p.stop(); err != nil {
			n.w.logf("%s: stopping pod %s: %v", n.Name, p.tmpl.Name, err)
		}
	}
}

// startServices waits for the boot to complete, then starts the registry proxy and the
// stand-in (Type=dbus: systemd-run returns once it owns its bus name).
func (b *bootedNode) startServices(ctx context.Context, n *Node, bootID string) error {
	if err := b.nsp.WaitRunning(ctx); err != nil {
		return err
	}
	if id := b.nsp.BootID(); id != bootID {
		return fmt.Errorf("boot %s ended while starting (now %q)", bootID, id)
	}
	regAddr := n.w.Registry.Addr()
	if _, err := b.nsp.Exec(ctx, "systemd-run", "--unit="+registryProxy, "--description=registry of the test world",
		"--socket-property=ListenStream="+regAddr,
		"/usr/lib/systemd/systemd-socket-proxyd", hostMount+"/registry.sock"); err != nil {
		return fmt.Errorf("starting the registry proxy: %w", err)
	}
	return b.startStandIn(ctx, n.Sysroot.OSName)
}

func (b *bootedNode) startStandIn(ctx context.Context, osname string) error {
	args := []string{"systemd-run", "--unit=" + standInUnit, "--description=rpm-ostree System Management Daemon (layerd test stand-in)",
		"-p", "Type=dbus", "-p", "BusName=" + rpmOstreeName,
		"--setenv=PATH=" + hostMount + "/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		hostMount + "/bin/rpmostreed", "--bus-address", "unix:path=/run/" + systemBusSocket,
		"--sysroot", "/sysroot", "--osname", osname, "--run-dir", "/run",
		"--registries-d", hostMount + "/trust/registries.d", "--policy", hostMount + "/trust/policy.json",
		"--registries-conf", hostMount + "/trust/registries.conf",
		"--on-reboot", "systemctl reboot"}
	if _, err := b.nsp.Exec(ctx, args...); err != nil {
		log, _ := b.nsp.Journal(ctx, "-b", "-u", standInUnit, "-o", "cat", "-n", "30")
		return fmt.Errorf("starting the rpm-ostreed stand-in: %w\n%s", err, log)
	}
	return nil
}

// waitUp waits until the node has rebooted at least reboots times and the services of its
// current boot are up.
func (n *Node) waitUp(ctx context.Context, reboots int) error {
	b := n.booted
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		id := b.nsp.BootID()
		b.mu.Lock()
		up, failed, failedBoot := b.upBootID, b.upErr, b.upBoot
		b.mu.Unlock()
		switch {
		case id == "" || b.nsp.Reboots() < reboots:
		case up == id:
			return nil
		case failed != nil && failedBoot == id:
			return fmt.Errorf("node %s, boot %s: %w", n.Name, id, failed)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for node %s to be up after %d reboots: %w", n.Name, reboots, ctx.Err())
		case <-b.nsp.Done():
			return fmt.Errorf("node %s: %w", n.Name, nspawn.ErrStopped)
		case <-tick.C:
		}
	}
}

// deployment is the booted deployment (the one nspawn booted).
func (b *bootedNode) deployment() (backend.BootedDeployment, error) {
	path := b.nsp.Deployment()
	if path == "" {
		return backend.BootedDeployment{}, fmt.Errorf("booted deployment: %w", nspawn.ErrStopped)
	}
	deps, err := b.nsp.Sysroot().Deployments()
	if err != nil {
		return backend.BootedDeployment{}, fmt.Errorf("booted deployment: %w", err)
	}
	for _, d := range deps {
		if d.Path == path && !d.Staged {
			return backend.BootedDeployment{OSName: d.OSName, Checksum: d.Checksum, Serial: d.Serial, Dir: d.Path, Kargs: d.Options}, nil
		}
	}
	return backend.BootedDeployment{}, fmt.Errorf("booted deployment %s is no boot entry any more", filepath.Base(path))
}

// hostAddress maps a D-Bus address of a socket under the node's /run to the host's path.
func (n *Node) hostAddress(address string) string {
	if n.booted == nil {
		return address
	}
	if rest, ok := strings.CutPrefix(address, "unix:path=/run/"); ok {
		return "unix:path=" + filepath.Join(n.RunDir, rest)
	}
	return address
}

// DialTxn dials a transaction address the node's rpm-ostreed returned, from the host: a socket
// under the node's /run is reached through Node.RunDir. Use it as rpmostree.Options.Dial for
// a client outside the node's pods.
func (n *Node) DialTxn(ctx context.Context, address string) (rpmostree.TxnConn, error) {
	return rpmostree.DialTxn(ctx, n.hostAddress(address))
}

// closeBooted powers the node off and stops everything of its booted tier.
func (n *Node) closeBooted() error {
	b := n.booted
	var errs []error
	if b.nsp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		errs = append(errs, b.nsp.Stop(ctx))
		cancel()
	}
	if b.stop != nil {
		b.stop()
		<-b.done
	}
	if b.fwd != nil {
		errs = append(errs, b.fwd.Close())
	}
	return errors.Join(errs...)
}

// crashStandIn kills rpm-ostreed.service with SIGKILL and starts it again, as systemd would
// restart a crashed rpm-ostreed.
func (b *bootedNode) crashStandIn(ctx context.Context, osname string) error {
	// The main process only: a crash of the daemon. Signalling the unit's other processes too
	// can fail with EIO when one of them is exiting at that moment.
	if _, err := b.nsp.Exec(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", standInUnit); err != nil {
		return fmt.Errorf("crashing the stand-in: %w", err)
	}
	for {
		if _, err := b.nsp.Exec(ctx, "systemctl", "is-active", "--quiet", standInUnit); err != nil {
			break // inactive or failed
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("crashing the stand-in: still active: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// A failed transient unit stays loaded until reset; inactive ones are gone already.
	_, _ = b.nsp.Exec(ctx, "systemctl", "reset-failed", standInUnit)
	return b.startStandIn(ctx, osname)
}
