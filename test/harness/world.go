// Package harness is the node-in-a-box: one Go API that starts the real parts of the test world
// (etcd + kube-apiserver + kube-controller-manager, a registry with signed OS images, and per node
// a libostree sysroot, a private system bus, the rpm-ostreed stand-in and a kubelet stand-in) and
// stops and removes all of it at the end. Booted-tier nodes (Options.Booted) really boot under
// systemd-nspawn instead (booted.go). Used by the e2e tests and by `make up` (test/box).
package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"layerd.dev/layerd/test/kube"
	"layerd.dev/layerd/test/nspawn"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// Options configure a World.
type Options struct {
	// Nodes is the number of nodes (default 1, or Booted when that is larger).
	Nodes int
	// Booted is how many of the nodes, from node-1 on, are booted-tier nodes: installed from
	// BootedBase and really booted under systemd-nspawn (see Node). The others are
	// directory-tier nodes installed from Base. Needs test/nspawn's prerequisites; the cached
	// Debian base is built on first use (debootstrap, about a minute).
	Booted int
	// SysrootSize, when > 0, puts each directory-tier node's sysroot on its own filesystem of
	// this many bytes (a tmpfs mounted at Node.Dir/sysroot before the base install, unmounted
	// by Close), so the free space statfs reports is the node's own and a test can fill it
	// (Node.SysrootFree) or grow it (Node.ResizeSysroot). The base install takes ~120 KiB.
	// Booted-tier nodes ignore it. Default 0: the sysroot is a directory on Dir's filesystem.
	SysrootSize int64
	// OSName is the stateroot of every node (default "fcos").
	OSName string
	// Dir holds everything the world makes (default: a new temporary directory, removed on Close).
	Dir string
	// Log receives progress lines (default: discarded).
	Log io.Writer
}

// World is a running node-in-a-box.
type World struct {
	Dir      string
	Kube     *kube.Cluster
	Registry *registry.Registry
	Images   *osimage.Builder
	Keys     *osimage.Keys
	// Trust are the policy.json, registries.d and registries.conf every node uses: images of the
	// registry must carry a sigstore signature by Keys.
	Trust osimage.TrustFiles
	// Base is the signed base OS image every directory-tier node was installed from (tag
	// fcos/os:base).
	Base *osimage.Image
	// BootedBase is the signed base OS image booted-tier nodes were installed from (tag
	// debian/os:base, nil without booted nodes): the bootable Debian tree of test/nspawn.
	// Layered images for booted nodes build on it with BootedImage (not Images.Layered: it
	// is not an osimage-built image).
	BootedBase *osimage.Image
	Nodes      []*Node

	opts       Options
	removeDir  bool
	standin    string       // path of the built rpmostreed stand-in (static)
	bootedBase *nspawn.Base // cached bootable tree (booted tier)
	bootedImg  v1.Image     // BootedBase in the registry, to layer on
	closeOnce  sync.Once
	closeErr   error
}

// Start brings a World up for a test and closes it when the test ends, even on failure.
func Start(t testing.TB, o Options) *World {
	t.Helper()
	timeout := 5 * time.Minute
	if o.Booted > 0 { // a first run debootstraps the booted tier's base
		timeout = 15 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	w, err := New(ctx, o)
	if err != nil {
		t.Fatalf("starting the node-in-a-box: %v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("stopping the node-in-a-box: %v", err)
		}
	})
	return w
}

// New brings a World up. ctx bounds the start only. On error everything started is stopped.
func New(ctx context.Context, o Options) (_ *World, err error) {
	if os.Geteuid() != 0 {
		return nil, errors.New("the node-in-a-box needs root (ostree sysroots, mount namespaces)")
	}
	if o.Nodes <= 0 {
		o.Nodes = max(1, o.Booted)
	}
	if o.Booted < 0 || o.Booted > o.Nodes {
		return nil, fmt.Errorf("the node-in-a-box: Booted (%d) must be between 0 and Nodes (%d)", o.Booted, o.Nodes)
	}
	if o.SysrootSize < 0 {
		return nil, fmt.Errorf("the node-in-a-box: SysrootSize (%d) must not be negative", o.SysrootSize)
	}
	if o.Booted > 0 {
		if err := nspawn.Prerequisites(); err != nil {
			return nil, err
		}
	}
	if o.OSName == "" {
		o.OSName = "fcos"
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	w := &World{opts: o, Dir: o.Dir}
	if w.Dir == "" {
		if w.Dir, err = os.MkdirTemp("", "layerd-box-"); err != nil {
			return nil, fmt.Errorf("creating the world's directory: %w", err)
		}
		w.removeDir = true
	} else if err := os.MkdirAll(w.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the world's directory: %w", err)
	}
	// The directory must be traversable by other uids (bus sockets checked as nobody).
	if err := os.Chmod(w.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("opening the world's directory: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, w.Close())
		}
	}()
	began := time.Now()
	if err := w.startShared(ctx); err != nil {
		return nil, err
	}
	w.logf("shared parts up in %v (apiserver %v)", time.Since(began).Round(time.Millisecond), w.Kube.StartDuration.Round(time.Millisecond))
	for i := range o.Nodes {
		add := w.addNode
		if i < o.Booted {
			add = w.addBootedNode
		}
		n, err := add(ctx, fmt.Sprintf("node-%d", i+1))
		if err != nil {
			return nil, err
		}
		w.Nodes = append(w.Nodes, n)
	}
	w.logf("world up in %v", time.Since(began).Round(time.Millisecond))
	return w, nil
}

func (w *World) startShared(ctx context.Context) error {
	var err error
	type res struct {
		c   *kube.Cluster
		err error
	}
	kc := make(chan res, 1)
	go func() { // the apiserver takes ~3 s: start it while the registry and images are made
		c, err := kube.Start(ctx, kube.Options{WorkDir: filepath.Join(w.Dir, "kube")})
		kc <- res{c, err}
	}()
	received := false
	defer func() {
		if !received { // an earlier step failed: keep the cluster so Close stops it
			if r := <-kc; r.c != nil {
				w.Kube = r.c
			}
		}
	}()
	if w.Registry, err = registry.Start(registry.Options{Dir: filepath.Join(w.Dir, "registry")}); err != nil {
		return fmt.Errorf("starting the registry: %w", err)
	}
	w.Images = &osimage.Builder{Registry: w.Registry.Addr()}
	if w.Keys, err = osimage.GenerateKeys(filepath.Join(w.Dir, "keys"), "layerd-test"); err != nil {
		return err
	}
	if w.Trust, err = osimage.WriteTrust(filepath.Join(w.Dir, "trust"), w.Registry.Addr(), w.Keys); err != nil {
		return err
	}
	if w.Base, err = w.Images.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "base", Version: "1.0"}); err != nil {
		return fmt.Errorf("building the base image: %w", err)
	}
	if err := osimage.Sign(ctx, w.Base.Pinned, w.Keys); err != nil {
		return fmt.Errorf("signing the base image: %w", err)
	}
	if w.standin, err = buildStandIn(ctx, filepath.Join(w.Dir, "bin")); err != nil {
		return err
	}
	if w.opts.Booted > 0 {
		began := time.Now()
		if w.bootedBase, err = nspawn.EnsureBase(ctx, nspawn.RootfsOptions{Log: w.opts.Log}); err != nil {
			return fmt.Errorf("the booted tier's base: %w", err)
		}
		if w.BootedBase, w.bootedImg, err = buildBootedBase(ctx, w.Registry.Addr(), w.Keys, w.bootedBase, w.logf); err != nil {
			return err
		}
		w.logf("booted tier's base ready in %v", time.Since(began).Round(time.Millisecond))
	}
	r := <-kc
	received, w.Kube = true, r.c
	if r.err != nil {
		return fmt.Errorf("starting the Kubernetes API: %w", r.err)
	}
	return applyPackaging(ctx, w.Kube.Client)
}

// Node returns the node with this name, or nil.
func (w *World) Node(name string) *Node {
	for _, n := range w.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// StopAPIServer stops kube-apiserver (etcd keeps the data); StartAPIServer brings it back.
func (w *World) StopAPIServer() error { return w.Kube.StopAPIServer() }

// StartAPIServer restarts kube-apiserver on the same address.
func (w *World) StartAPIServer(ctx context.Context) error { return w.Kube.StartAPIServer(ctx) }

// Close stops every process the World started and removes what it made.
func (w *World) Close() error {
	w.closeOnce.Do(func() {
		var errs []error
		for _, n := range w.Nodes {
			errs = append(errs, n.close())
		}
		if w.Kube != nil {
			errs = append(errs, w.Kube.Stop())
		}
		if w.Registry != nil {
			errs = append(errs, w.Registry.Close())
		}
		if w.removeDir {
			errs = append(errs, os.RemoveAll(w.Dir))
		}
		w.closeErr = errors.Join(errs...)
	})
	return w.closeErr
}

func (w *World) logf(format string, args ...any) {
	fmt.Fprintf(w.opts.Log, "box: "+format+"\n", args...)
}
