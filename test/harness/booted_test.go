package harness_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/nspawn"
	"layerd.dev/layerd/test/osimage"
)

// TestBootedNodeInWorld is the booted tier's acceptance test inside the world: node-1 really
// boots (systemd-nspawn) next to a directory-tier node-2; a signed layered image staged with
// lock-finalization through the production client and finalized reboots the container for
// real, and the Node object follows the reboot.
func TestBootedNodeInWorld(t *testing.T) {
	requireRoot(t)
	listenersBefore := len(ownListeners(t))
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute) // a first run debootstraps
	defer cancel()
	began := time.Now()
	w, err := harness.New(ctx, harness.Options{Nodes: 2, Booted: 1, Dir: filepath.Join(dir, "world"), Log: testWriter{t}})
	if err != nil {
		t.Fatalf("starting the world: %v", err)
	}
	fmt.Printf("BENCH booted-node-in-world-start: %.2fs\n", time.Since(began).Seconds())
	closed := false
	defer func() {
		if !closed {
			_ = w.Close()
		}
	}()
	node, plain := w.Nodes[0], w.Nodes[1]
	nsp := node.Nspawn()
	if !node.BootedTier() || nsp == nil || plain.BootedTier() {
		t.Fatalf("tiers: node-1 booted %v, node-2 booted %v", node.BootedTier(), plain.BootedTier())
	}
	client := connect(ctx, t, node)
	firstBoot := nsp.BootID()

	t.Run("the_booted_node_is_Ready_with_the_container's_boot_ID", func(t *testing.T) {
		host, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
		if firstBoot == "" || firstBoot == strings.TrimSpace(string(host)) {
			t.Fatalf("container boot ID %q (host %q)", firstBoot, host)
		}
		for _, n := range w.Nodes {
			obj, err := w.Kube.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !ready(obj) {
				t.Errorf("%s is not Ready: %+v", n.Name, obj.Status.Conditions)
			}
			if n == node && obj.Status.NodeInfo.BootID != firstBoot {
				t.Errorf("%s reports boot ID %q, the container's is %q", n.Name, obj.Status.NodeInfo.BootID, firstBoot)
			}
		}
		if _, err := plain.Journal(ctx); err == nil {
			t.Error("a directory-tier node has a journal")
		}
	})

	t.Run("the_production_client_sees_the_booted_deployment_through_the_stand-in_inside", func(t *testing.T) {
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		booted, err := node.Booted()
		if err != nil {
			t.Fatal(err)
		}
		if st.Booted == nil || st.Booted.Checksum != booted.Checksum || !strings.HasSuffix(st.Booted.ContainerImageReference, w.BootedBase.Pinned) ||
			st.Booted.ContainerImageReferenceDigest != w.BootedBase.Digest.String() || st.Path != "/sysroot" {
			t.Fatalf("status %+v; booted %+v; want %s from %s", st, st.Booted, booted.Checksum, w.BootedBase.Pinned)
		}
		if out, err := nsp.Exec(ctx, "systemctl", "is-active", "rpm-ostreed.service"); err != nil {
			t.Errorf("rpm-ostreed.service inside: %s %v", out, err)
		}
	})

	setForeignCondition(ctx, t, w, node.Name)
	pod := startBootedPod(t, node)
	var staged string // digest of the image the node boots after the reboot

	t.Run("a_signed_image_staged_locked_then_finalized_really_reboots_the_node", func(t *testing.T) {
		img, err := w.BootedImage(ctx, osimage.Spec{Repo: harness.BootedBaseRepo, Tag: "v2", Version: "2.0",
			Files: map[string]osimage.File{"usr/lib/layerd-test/v2": {Content: "added in v2\n"}, "etc/motd": {Content: "layerd v2 motd\n"}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
			t.Fatal(err)
		}
		watched := watchReady(ctx, t, w, node.Name)
		t0 := time.Now()
		// Signature enforced inside the node: the policy and key are bound into it.
		if err := client.Rebase(ctx, "ostree-image-signed:docker://"+img.Pinned, rpmostree.RebaseOptions{LockFinalization: true}); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("BENCH booted-node-stage-image: %.2fs\n", time.Since(t0).Seconds())
		staged = img.Digest.String()
		st, err := client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Staged == nil || st.Staged.ContainerImageReferenceDigest != img.Digest.String() || node.Reboots() != 0 || nsp.BootID() != firstBoot {
			t.Fatalf("after staging: staged %+v, reboots %d, boot %s (first %s)", st.Staged, node.Reboots(), nsp.BootID(), firstBoot)
		}
		if _, err := os.Stat(filepath.Join(node.RunDir, "ostree", "staged-deployment-locked")); err != nil {
			t.Fatalf("the staged deployment is not finalization-locked: %v", err)
		}
		t0 = time.Now()
		if err := client.FinalizeDeployment(ctx, img.Digest.String(), rpmostree.FinalizeOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := node.WaitRebooted(ctx, 1); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("BENCH booted-node-finalize-reboot: %.2fs\n", time.Since(t0).Seconds())
		newBoot := nsp.BootID()
		if node.Reboots() != 1 || newBoot == firstBoot {
			t.Fatalf("Reboots() = %d, boot %s (first %s)", node.Reboots(), newBoot, firstBoot)
		}
		seen := watched.until(ctx, t, func(s readySample) bool { return s.ready && s.bootID == newBoot })
		i := strings.Index(seen, "NotReady")
		if i < 0 || !strings.Contains(seen[i:], "Ready/"+newBoot) {
			t.Errorf("the Node did not go NotReady then Ready with boot %s: %s", newBoot, seen)
		}
		client = connect(ctx, t, node) // the old bus went down with the old boot
		st, err = client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Booted == nil || st.Booted.ContainerImageReferenceDigest != img.Digest.String() ||
			st.Rollback == nil || st.Rollback.ContainerImageReferenceDigest != w.BootedBase.Digest.String() || st.Staged != nil {
			t.Fatalf("after the reboot: booted %+v, rollback %+v, staged %+v", st.Booted, st.Rollback, st.Staged)
		}
		for file, want := range map[string]string{"/usr/lib/layerd-test/v2": "added in v2\n", "/etc/motd": "layerd v2 motd\n"} {
			if got, err := nsp.Exec(ctx, "cat", file); err != nil || string(got) != want {
				t.Errorf("%s inside = %q, %v; want %q", file, got, err, want)
			}
		}
	})

	t.Run("journalctl_inside_shows_both_boots_and_the_finalization", func(t *testing.T) {
		boots, err := node.Journal(ctx, "--list-boots")
		if err != nil || !strings.Contains(boots, strings.ReplaceAll(firstBoot, "-", "")) || !strings.Contains(boots, strings.ReplaceAll(nsp.BootID(), "-", "")) {
			t.Errorf("journalctl --list-boots (%v):\n%s", err, boots)
		}
		if j, err := node.Journal(ctx, "-b", "-o", "cat", "_PID=1"); err != nil || !strings.Contains(j, "Startup finished") {
			t.Errorf("this boot's journal lacks \"Startup finished\" (%v)", err)
		}
		if j, err := node.Journal(ctx, "-b", "-1", "-u", "ostree-finalize-staged.service", "-o", "cat"); err != nil || !strings.Contains(j, "Copying /etc changes") {
			tail, _ := node.Journal(ctx, "-b", "-1", "-n", "60")
			t.Errorf("the previous boot's journal lacks the finalization (%v):\n%s\nlast lines of that boot:\n%s", err, j, tail)
		}
	})

	t.Run("a_crashed_stand-in_is_restarted_and_reports_from_disk", func(t *testing.T) {
		if err := node.CrashStandIn(); err != nil {
			t.Fatal(err)
		}
		c := connect(ctx, t, node)
		defer c.Close()
		st, err := c.Status(ctx)
		if err != nil || st.Booted == nil || st.Booted.ContainerImageReferenceDigest != staged {
			t.Fatalf("after the crash: %+v, %v; want booted %s", st, err, staged)
		}
		if j, err := node.Journal(ctx, "-b", "-u", "rpm-ostreed.service", "-o", "cat"); err != nil || strings.Count(j, "serving") < 2 {
			t.Errorf("the journal does not show two stand-in starts this boot (%v):\n%s", err, j)
		}
	})

	t.Run("the_pod_runs_again_after_the_reboot_on_the_node's_run_and_root", func(t *testing.T) {
		pod.waitLines(ctx, t, 2)
		lines := pod.lines()
		for _, l := range lines {
			if l != "ID=debian bus" {
				t.Errorf("pod saw %q, want the node's os-release and bus socket", l)
			}
		}
		if p := node.Pod("probe"); p == nil || p.Pid() == pod.first {
			t.Errorf("the pod was not restarted after the reboot")
		}
	})

	t.Run("a_foreign_condition_survives_three_heartbeats", func(t *testing.T) {
		h := node.Kubelet.Heartbeats()
		deadline := time.Now().Add(30 * time.Second)
		for node.Kubelet.Heartbeats() < h+3 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		obj, err := w.Kube.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if node.Kubelet.Heartbeats() < h+3 || !hasCondition(obj, "OSImageUpToDate", "layerd-test") {
			t.Errorf("after %d heartbeats: conditions %+v", node.Kubelet.Heartbeats()-h, obj.Status.Conditions)
		}
	})

	client.Close()
	t0 := time.Now()
	if err := w.Close(); err != nil {
		t.Fatalf("closing the world: %v", err)
	}
	closed = true
	t.Logf("world closed in %v", time.Since(t0).Round(time.Millisecond))
	t.Run("nothing_is_left_behind", func(t *testing.T) {
		if procs := childProcesses(t); len(procs) > 0 {
			t.Errorf("processes left: %v", procs)
		}
		if l := ownListeners(t); len(l) > listenersBefore {
			t.Errorf("listening sockets left: %v", l)
		}
		if err := nspawn.Leftovers(dir); err != nil {
			t.Error(err)
		}
		for _, n := range []string{"node-1", "node-2"} {
			if sub, _ := os.ReadDir(filepath.Join(dir, "world", "nodes", n, "sysroot")); len(sub) > 0 {
				t.Errorf("sysroot of %s left", n)
			}
		}
	})
}

// connect opens the production client on the node's bus from the host.
func connect(ctx context.Context, t *testing.T, n *harness.Node) *rpmostree.Client {
	t.Helper()
	c, err := rpmostree.NewWithAddress(ctx, n.BusAddress(), rpmostree.Options{Dial: n.DialTxn})
	if err != nil {
		t.Fatalf("connecting to rpm-ostreed of %s: %v", n.Name, err)
	}
	return c
}

func ready(n *corev1.Node) bool { return hasConditionStatus(n, corev1.NodeReady, corev1.ConditionTrue) }

func hasConditionStatus(n *corev1.Node, typ corev1.NodeConditionType, status corev1.ConditionStatus) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Status == status
		}
	}
	return false
}

func hasCondition(n *corev1.Node, typ corev1.NodeConditionType, reason string) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == typ {
			return c.Reason == reason
		}
	}
	return false
}

// setForeignCondition writes a condition the kubelet stand-in does not own, as layerd does.
func setForeignCondition(ctx context.Context, t *testing.T, w *harness.World, name string) {
	t.Helper()
	cond := corev1.NodeCondition{Type: "OSImageUpToDate", Status: corev1.ConditionFalse, Reason: "layerd-test",
		LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Kube.Client.CoreV1().Nodes().Patch(ctx, name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatalf("setting OSImageUpToDate on %s: %v", name, err)
	}
}

// readySample is the Ready status and boot ID of one Node update.
type readySample struct {
	ready  bool
	bootID string
}

// readyWatch records the Node's Ready/boot ID transitions.
type readyWatch struct {
	mu      sync.Mutex
	samples []readySample
	changed chan struct{}
}

// watchReady watches the Node until the test ends.
func watchReady(ctx context.Context, t *testing.T, w *harness.World, name string) *readyWatch {
	t.Helper()
	wi, err := w.Kube.Client.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wi.Stop)
	rw := &readyWatch{changed: make(chan struct{}, 1)}
	go func() {
		for ev := range wi.ResultChan() {
			n, ok := ev.Object.(*corev1.Node)
			if !ok || ev.Type == watch.Deleted {
				continue
			}
			s := readySample{ready: ready(n), bootID: n.Status.NodeInfo.BootID}
			rw.mu.Lock()
			if len(rw.samples) == 0 || rw.samples[len(rw.samples)-1] != s {
				rw.samples = append(rw.samples, s)
			}
			rw.mu.Unlock()
			select {
			case rw.changed <- struct{}{}:
			default:
			}
		}
	}()
	return rw
}

// until waits for a sample matching cond and returns the transitions seen, e.g.
// "Ready/<id> NotReady/<id> Ready/<new id>".
func (rw *readyWatch) until(ctx context.Context, t *testing.T, cond func(readySample) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		rw.mu.Lock()
		var parts []string
		found := false
		for _, s := range rw.samples {
			state := "NotReady"
			if s.ready {
				state = "Ready"
			}
			parts = append(parts, state+"/"+s.bootID)
			found = found || cond(s)
		}
		rw.mu.Unlock()
		if found {
			return strings.Join(parts, " ")
		}
		select {
		case <-rw.changed:
		case <-ctx.Done():
			t.Fatalf("the Node never matched; transitions: %s", strings.Join(parts, " "))
		}
	}
}

// bootedPod is a probe pod on a booted node: each start prints the node's os-release ID (from
// /host) and whether the node's bus socket is at /run, then sleeps.
type bootedPod struct {
	mu    sync.Mutex
	out   strings.Builder
	first int
}

func (p *bootedPod) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *bootedPod) lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Split(strings.TrimSpace(p.out.String()), "\n")
}

func (p *bootedPod) waitLines(ctx context.Context, t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(p.lines()) < n || p.lines()[0] == "" {
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("the pod printed %q, want %d lines", p.lines(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func startBootedPod(t *testing.T, n *harness.Node) *bootedPod {
	t.Helper()
	p := &bootedPod{}
	script := `id=$(grep '^ID=' /host/usr/lib/os-release); if [ -S /run/dbus/system_bus_socket ]; then echo "$id bus"; else echo "$id nobus"; fi; exec sleep 600`
	pod, _, err := n.RunPod(harness.PodTemplate{Name: "probe", Path: "/bin/sh", Args: []string{"sh", "-c", script}, Stdout: p, Stderr: p})
	if err != nil {
		t.Fatalf("starting a pod on %s: %v", n.Name, err)
	}
	p.first = pod.Pid()
	return p
}
