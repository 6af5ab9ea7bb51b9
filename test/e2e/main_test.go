// Package e2e_test runs layerd's parts against the node-in-a-box (test/harness): a real
// kube-apiserver, a registry with signed OS images, and per node a libostree sysroot, a private
// system bus and the rpm-ostreed stand-in. One World serves the whole package.
package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// shared is the package's World, started by the first test that needs it and closed by
// TestMain after every test ran.
var shared struct {
	once sync.Once
	w    *harness.World
	err  error

	layerdOnce sync.Once
	layerdDir  string
	layerdBin  string
	layerdErr  error

	imagesMu sync.Mutex
	images   map[string]*osimage.Image
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.w != nil {
		if err := shared.w.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: stopping the node-in-a-box: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
	}
	if shared.layerdDir != "" {
		_ = os.RemoveAll(shared.layerdDir)
	}
	os.Exit(code)
}

// world returns the package's World with two nodes, starting it on first use. A missing
// prerequisite (root, LAYERD_K8S_BIN, Debian's ostree) fails the test.
func world(t *testing.T) *harness.World {
	t.Helper()
	shared.once.Do(func() {
		if os.Geteuid() != 0 {
			shared.err = errors.New("the e2e tests need root (ostree sysroots, mount namespaces)")
			return
		}
		if os.Getenv("LAYERD_K8S_BIN") == "" {
			shared.err = errors.New("LAYERD_K8S_BIN is not set (export LAYERD_K8S_BIN=$(hack/deps.sh))")
			return
		}
		var log io.Writer = io.Discard
		if testing.Verbose() {
			log = os.Stderr
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		began := time.Now()
		shared.w, shared.err = harness.New(ctx, harness.Options{Nodes: 2, Log: log})
		if shared.err == nil {
			fmt.Printf("BENCH e2e-box-up (2 nodes): %.2fs\n", time.Since(began).Seconds())
		}
	})
	if shared.err != nil {
		t.Fatalf("node-in-a-box: %v", shared.err)
	}
	return shared.w
}

// image builds (once per tag) a layered image on the world's base and signs it unless
// unsigned. Specs are deterministic, so a tag always names the same digest.
func image(t *testing.T, w *harness.World, spec osimage.Spec, signed bool) *osimage.Image {
	t.Helper()
	shared.imagesMu.Lock()
	defer shared.imagesMu.Unlock()
	if img, ok := shared.images[spec.Tag]; ok {
		return img
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := w.Images.Layered(ctx, w.Base, spec)
	if err != nil {
		t.Fatalf("building image %s: %v", spec.Tag, err)
	}
	if signed {
		if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
			t.Fatalf("signing %s: %v", img.Pinned, err)
		}
	}
	if shared.images == nil {
		shared.images = map[string]*osimage.Image{}
	}
	shared.images[spec.Tag] = img
	return img
}

// The images the tests stage. v2 adds /usr/bin/mytool and changes the default of /etc/motd.
const (
	motdV2   = "Welcome to layerd test OS 2.0, now with mytool\n"
	mytoolV2 = "#!/bin/sh\necho mytool 2.0\n"
)

func imageV2(t *testing.T, w *harness.World) *osimage.Image {
	return image(t, w, osimage.Spec{Repo: "fcos/os", Tag: "v2", Version: "2.0", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: mytoolV2},
		"etc/motd":       {Content: motdV2},
	}}, true)
}

func imageV3(t *testing.T, w *harness.World) *osimage.Image {
	return image(t, w, osimage.Spec{Repo: "fcos/os", Tag: "v3", Version: "3.0", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 3.0\n"},
	}}, true)
}

func imageUnsigned(t *testing.T, w *harness.World) *osimage.Image {
	return image(t, w, osimage.Spec{Repo: "fcos/os", Tag: "unsigned", Version: "2.0-unsigned", Files: map[string]osimage.File{
		"usr/bin/unsigned-tool": {Mode: 0o755, Content: "#!/bin/sh\necho nobody signed me\n"},
	}}, false)
}

// signedRefspec is the refspec rpm-ostree verifies with the node's containers policy.
func signedRefspec(img *osimage.Image) string { return "ostree-image-signed:docker://" + img.Pinned }

// connect registers a client with the node's stand-in over the node's bus. The client is
// closed when the test ends (its bus may be gone by then after a reboot: errors are ignored).
func connect(t *testing.T, n *harness.Node) *rpmostree.Client {
	t.Helper()
	addr := n.BusAddress()
	if addr == "" {
		t.Fatalf("%s has no system bus", n.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var c *rpmostree.Client
	var err error
	for {
		c, err = rpmostree.NewWithAddress(ctx, addr, rpmostree.Options{ClientID: "layerd-e2e"})
		// A reboot an earlier test began may still be bringing the stand-in back: wait for its
		// name on the bus, as rpm-ostree's clients wait for the daemon's activation.
		if err == nil || !strings.Contains(err.Error(), "was not provided by any .service files") || ctx.Err() != nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connecting to rpm-ostree on %s (%s): %v", n.Name, addr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func status(t *testing.T, c *rpmostree.Client) *rpmostree.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatalf("reading rpm-ostree status: %v", err)
	}
	return st
}

func digestOf(d *rpmostree.Deployment) string {
	if d == nil {
		return "<none>"
	}
	return d.ContainerImageReferenceDigest
}

// waitReboots polls until the harness has performed want reboots of n. Node.Reboots takes the
// node's lock, which a reboot holds until services and pods are back.
func waitReboots(t *testing.T, n *harness.Node, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for n.Reboots() < want {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d reboots after %v, want %d (stand-in log %s)", n.Name, n.Reboots(), timeout, want, standInLog(n))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// standInLog is the current stand-in's log file (the harness opens one per boot).
func standInLog(n *harness.Node) string {
	return filepath.Join(n.Dir, fmt.Sprintf("rpmostreed.%d.log", n.Reboots()))
}

// countInLog counts lines of the node's current stand-in log containing s.
func countInLog(t *testing.T, n *harness.Node, s string) int {
	t.Helper()
	b, err := os.ReadFile(standInLog(n))
	if err != nil {
		t.Fatalf("reading the stand-in log: %v", err)
	}
	return strings.Count(string(b), s)
}

// waitInLog polls the stand-in log until it holds at least want lines containing s.
func waitInLog(t *testing.T, n *harness.Node, s string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for countInLog(t, n, s) < want {
		if time.Now().After(deadline) {
			t.Fatalf("%q not in the stand-in log %s after %v", s, standInLog(n), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// standInPID finds the node's running rpm-ostreed stand-in: the harness does not expose its
// process, so it is found by its --run-dir argument.
func standInPID(t *testing.T, n *harness.Node) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	want := "\x00--run-dir\x00" + n.RunDir + "\x00"
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(want)) {
			continue
		}
		if argv0, _, _ := bytes.Cut(b, []byte{0}); filepath.Base(string(argv0)) == "rpmostreed" {
			return pid
		}
	}
	t.Fatalf("no rpmostreed stand-in process with --run-dir %s", n.RunDir)
	return 0
}

// knob drives the stand-in's fault knobs: the command goes into <RunDir>/rpm-ostreed.control
// and SIGUSR1 makes the stand-in read it.
func knob(t *testing.T, n *harness.Node, command string) {
	t.Helper()
	path := filepath.Join(n.RunDir, "rpm-ostreed.control")
	if err := os.WriteFile(path, []byte(command+"\n"), 0o644); err != nil {
		t.Fatalf("writing the control file: %v", err)
	}
	t.Cleanup(func() { _ = os.Remove(path) })
	if err := syscall.Kill(standInPID(t, n), syscall.SIGUSR1); err != nil {
		t.Fatalf("signalling the stand-in: %v", err)
	}
}

// layerdBinary builds ./cmd/layerd once for the package (with the GOFLAGS of the test run).
func layerdBinary(t *testing.T) string {
	t.Helper()
	shared.layerdOnce.Do(func() {
		gomod, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			shared.layerdErr = fmt.Errorf("finding the module root: %w", err)
			return
		}
		root := filepath.Dir(strings.TrimSpace(string(gomod)))
		if shared.layerdDir, err = os.MkdirTemp("", "layerd-e2e-bin-"); err != nil {
			shared.layerdErr = err
			return
		}
		shared.layerdBin = filepath.Join(shared.layerdDir, "layerd")
		cmd := exec.Command("go", "build", "-o", shared.layerdBin, "./cmd/layerd")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			shared.layerdErr = fmt.Errorf("go build ./cmd/layerd: %w\n%s", err, out)
		}
	})
	if shared.layerdErr != nil {
		t.Fatal(shared.layerdErr)
	}
	return shared.layerdBin
}

// podSystemBus is DBUS_SYSTEM_BUS_ADDRESS inside a pod: the node's /run is the pod's /run and
// the harness starts the node's dbus-daemon in <RunDir>/dbus.
const podSystemBus = harness.PodSystemBus

// runInPod runs layerd with args on n the way a DaemonSet pod runs and returns its stdout.
func runInPod(t *testing.T, n *harness.Node, args ...string) string {
	t.Helper()
	if _, err := os.Stat(filepath.Join(n.RunDir, "dbus", "system_bus_socket")); err != nil {
		t.Fatalf("the node's bus socket is not where the pod expects it: %v", err)
	}
	bin := layerdBinary(t)
	var stdout, stderr bytes.Buffer
	pod, stop, err := n.RunPod(harness.PodTemplate{
		Name: "layerd-" + strings.Join(args, "-"), Path: bin, Args: append([]string{"layerd"}, args...),
		Env: []string{podSystemBus}, Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatalf("starting layerd %v in a pod on %s: %v", args, n.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	werr := pod.Wait(ctx)
	if err := stop(); err != nil {
		t.Errorf("stopping the pod: %v", err)
	}
	if werr != nil {
		t.Fatalf("layerd %v in a pod on %s: %v\nstdout:\n%s\nstderr:\n%s", args, n.Name, werr, stdout.String(), stderr.String())
	}
	return stdout.String()
}
