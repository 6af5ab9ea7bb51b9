package backend

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/test/ostreesys"
)

const testOS = "fcos"

// node is one directory-tier node: a real sysroot, its /run and a backend.
type node struct {
	t      *testing.T
	ctx    context.Context
	sys    *ostreesys.Sysroot
	runDir string
	opts   Options
	b      *Backend
}

// timed runs fn and logs how long the step took.
func timed(t *testing.T, step string, fn func() error) {
	t.Helper()
	start := time.Now()
	err := fn()
	t.Logf("step %-34s %v", step, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
}

// newNode creates a sysroot with v1 (etc defaults etcV1) deployed from the
// local ref fcos/stable, boots it and opens a backend.
func newNode(t *testing.T, mod func(*Options)) *node {
	t.Helper()
	n := newEmptyNode(t, mod)
	n.commitRef("1", etcV1)
	timed(t, "deploy v1 + boot", func() error {
		if _, err := n.sys.Deploy(n.ctx, testOS+"/stable", ostreesys.DeployOptions{Kargs: []string{"root=LABEL=root"}}); err != nil {
			return err
		}
		_, err := Boot(n.ctx, n.sys.Path, n.runDir)
		return err
	})
	return n
}

// newEmptyNode creates a sysroot without deployments and a backend on it.
func newEmptyNode(t *testing.T, mod func(*Options)) *node {
	t.Helper()
	if err := ostreesys.Prerequisites(); err != nil {
		t.Fatalf("backend tests need root and the Debian ostree tools: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	n := &node{t: t, ctx: ctx, runDir: filepath.Join(dir, "run")}
	timed(t, "init sysroot", func() (err error) {
		n.sys, err = ostreesys.Init(ctx, filepath.Join(dir, "sysroot"), testOS)
		return err
	})
	t.Cleanup(func() {
		if err := n.sys.Remove(); err != nil {
			t.Errorf("remove sysroot: %v", err)
		}
	})
	n.opts = Options{Sysroot: n.sys.Path, OSName: testOS, RunDir: n.runDir}
	if mod != nil {
		mod(&n.opts)
	}
	n.b = n.newBackend()
	return n
}

// deployImage installs a node from a container image the way a host is
// provisioned: import, a non-staged deploy with the container origin, boot.
func (n *node) deployImage(refspec string) {
	n.t.Helper()
	timed(n.t, "provision "+refspec, func() error {
		cref, err := parseContainerRefspec(refspec)
		if err != nil {
			return err
		}
		csum, _, err := n.b.importImage(n.ctx, cref, "", false, "", &recorder{})
		if err != nil {
			return err
		}
		if _, err := n.sys.Deploy(n.ctx, csum, ostreesys.DeployOptions{Kargs: []string{"root=LABEL=root"},
			Origin: &ostreesys.Origin{ContainerImageReference: refspec}}); err != nil {
			return err
		}
		_, err = Boot(n.ctx, n.sys.Path, n.runDir)
		return err
	})
}

func (n *node) newBackend() *Backend {
	n.t.Helper()
	b, err := New(n.opts)
	if err != nil {
		n.t.Fatalf("backend: %v", err)
	}
	return b
}

// commitRef commits a tiny tree of the given version to fcos/stable.
func (n *node) commitRef(version string, etc map[string]string) string {
	n.t.Helper()
	tree := filepath.Join(n.t.TempDir(), "tree")
	var csum string
	timed(n.t, "commit v"+version, func() error {
		if err := ostreesys.BuildTree(tree, ostreesys.TreeOptions{Version: version, Etc: etc}); err != nil {
			return err
		}
		var err error
		csum, err = n.sys.CommitTree(n.ctx, tree, testOS+"/stable", map[string]string{metaVersion: version})
		return err
	})
	return csum
}

// deployments returns Deployments and fails the test on error.
func (n *node) deployments() ([]map[string]dbus.Variant, int) {
	n.t.Helper()
	ds, booted, err := n.b.Deployments(n.ctx)
	if err != nil {
		n.t.Fatalf("deployments: %v", err)
	}
	return ds, booted
}

// boot reboots the node (Boot) and returns the result.
func (n *node) boot() BootResult {
	n.t.Helper()
	var res BootResult
	timed(n.t, "boot", func() (err error) {
		res, err = Boot(n.ctx, n.sys.Path, n.runDir)
		return err
	})
	return res
}

// bootedEtc is the path of a file in the booted deployment's /etc.
func (n *node) bootedEtc(name string) string {
	n.t.Helper()
	d, err := Booted(n.sys.Path, n.runDir)
	if err != nil {
		n.t.Fatal(err)
	}
	return filepath.Join(d.Dir, "etc", name)
}

var statusLineRE = regexp.MustCompile(`^([* ]) (\S+) ([0-9a-f]{64})\.([0-9]+)(?: \((\w+)\))?$`)

// assertStatusAgrees runs `ostree admin status` in the node's fake boot and
// compares order, booted, staged, pending and rollback with Deployments.
func (n *node) assertStatusAgrees() {
	n.t.Helper()
	booted, err := Booted(n.sys.Path, n.runDir)
	if err != nil {
		n.t.Fatal(err)
	}
	out, err := n.sys.ExecBooted(n.ctx, booted.Dir, n.runDir, "ostree", "admin", "status")
	if err != nil {
		n.t.Fatalf("ostree admin status: %v", err)
	}
	var fromStatus []string
	for _, line := range strings.Split(string(out), "\n") {
		if m := statusLineRE.FindStringSubmatch(line); m != nil {
			fromStatus = append(fromStatus, fmt.Sprintf("%s|%s|%s.%s|%s", m[1], m[2], m[3], m[4], m[5]))
		}
	}
	ds, bootedIdx := n.deployments()
	var fromDBus []string
	for i, d := range ds {
		mark, label := " ", ""
		switch {
		case d["booted"].Value().(bool):
			mark = "*"
		case d["staged"].Value().(bool):
			label = "staged"
		case i < bootedIdx:
			label = "pending"
		case i == bootedIdx+1:
			label = "rollback"
		}
		fromDBus = append(fromDBus, fmt.Sprintf("%s|%s|%s.%d|%s", mark, d["osname"].Value(),
			d["checksum"].Value(), d["serial"].Value(), label))
	}
	if !reflect.DeepEqual(fromStatus, fromDBus) {
		n.t.Errorf("ostree admin status disagrees:\nstatus:      %q\nDeployments: %q\n%s", fromStatus, fromDBus, out)
	}
}

// recorder is a Progress that keeps every signal.
type recorder struct {
	mu     sync.Mutex
	events []string
	bytes  uint64
}

func (r *recorder) add(s string) { r.mu.Lock(); r.events = append(r.events, s); r.mu.Unlock() }

func (r *recorder) Message(text string)   { r.add("Message:" + text) }
func (r *recorder) TaskBegin(text string) { r.add("TaskBegin:" + text) }
func (r *recorder) TaskEnd(text string)   { r.add("TaskEnd:" + text) }
func (r *recorder) ProgressEnd()          { r.add("ProgressEnd") }
func (r *recorder) PercentProgress(text string, pct uint32) {
	r.add(fmt.Sprintf("PercentProgress:%s:%d", text, pct))
}
func (r *recorder) DownloadProgress(d DownloadProgress) {
	r.mu.Lock()
	r.bytes = max(r.bytes, d.Bytes)
	r.mu.Unlock()
	r.add("DownloadProgress")
}

func (r *recorder) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

// wantSig checks that a dict key exists with the given D-Bus signature.
func wantSig(t *testing.T, d map[string]dbus.Variant, key, sig string) {
	t.Helper()
	v, ok := d[key]
	if !ok {
		t.Errorf("key %q missing", key)
		return
	}
	if got := v.Signature().String(); got != sig {
		t.Errorf("key %q has type %s, want %s", key, got, sig)
	}
}

var (
	etcV1 = map[string]string{"motd": "motd v1\n", "app.conf": "level=1\n"}
	etcV2 = map[string]string{"motd": "motd v2\n", "app.conf": "level=2\n", "new.conf": "new in v2\n"}
)
