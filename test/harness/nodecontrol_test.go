package harness_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/test/harness"
)

// lockedBuffer is a bytes.Buffer safe for a pod's writes and the test's reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNodeControls: a world whose directory-tier sysroots are their own 32 MiB filesystems (the
// base install, a pod's read-only bind, a reboot and a resize all work on it, and Close leaves
// no mount behind), and the kubelet stand-in of a node stopped, started again and removed with
// its Node for good.
func TestNodeControls(t *testing.T) {
	requireRoot(t)
	const size = 32 << 20
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	began := time.Now()
	w, err := harness.New(ctx, harness.Options{Nodes: 2, SysrootSize: size, Dir: filepath.Join(dir, "world"), Log: testWriter{t}})
	if err != nil {
		t.Fatalf("starting the world: %v", err)
	}
	fmt.Printf("BENCH box-up (2 nodes, sysroots on their own tmpfs): %.2fs\n", time.Since(began).Seconds())
	closed := false
	defer func() {
		if !closed {
			_ = w.Close()
		}
	}()
	kube := w.Kube.Client
	n1, n2 := w.Nodes[0], w.Nodes[1]

	t.Run("each_sysroot_is_a_filesystem_of_the_given_size_holding_the_base_install", func(t *testing.T) {
		for _, n := range w.Nodes {
			var st unix.Statfs_t
			if err := unix.Statfs(n.Sysroot.Path, &st); err != nil {
				t.Fatal(err)
			}
			if st.Type != unix.TMPFS_MAGIC || int64(st.Blocks)*st.Bsize != size {
				t.Errorf("%s: sysroot filesystem type %#x of %d bytes, want a tmpfs of %d", n.Name, st.Type, int64(st.Blocks)*st.Bsize, size)
			}
			free, err := n.SysrootFree()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: the base install uses %d KiB of the sysroot", n.Name, (size-int64(free))>>10)
			if free == 0 || free >= size {
				t.Errorf("%s: %d bytes free of %d after the base install", n.Name, free, size)
			}
			if _, err := n.Booted(); err != nil {
				t.Errorf("%s: %v", n.Name, err)
			}
		}
	})

	t.Run("a_pod_sees_the_sysroot_read_only_and_a_resize_at_once", func(t *testing.T) {
		script := `stat -f -c size=%b:%S /host/sysroot; if touch /host/sysroot/x 2>/dev/null; then echo rw; else echo ro; fi
while [ ! -e /run/resized ]; do sleep 0.05; done
stat -f -c size=%b:%S /host/sysroot`
		var out lockedBuffer
		pod, stop, err := n1.RunPod(harness.PodTemplate{Name: "df", Path: "/bin/sh", Args: []string{"sh", "-c", script}, Stdout: &out, Stderr: &out})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = stop() }()
		waitUntil(t, "the pod's first lines", 20*time.Second, func() bool { return strings.Count(out.String(), "\n") >= 2 })
		if err := n1.ResizeSysroot(2 * size); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(n1.RunDir, "resized"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
		defer wcancel()
		if err := pod.Wait(wctx); err != nil {
			t.Fatalf("pod: %v\n%s", err, out.String())
		}
		lines := strings.Fields(out.String())
		if len(lines) != 3 || lines[1] != "ro" || sizeOf(t, lines[0]) != size || sizeOf(t, lines[2]) != 2*size {
			t.Errorf("the pod saw %q; want a read-only sysroot of %d bytes, then of %d", lines, size, 2*size)
		}
		if pod.Stopped() {
			t.Error("a pod that exited on its own reports Stopped")
		}
	})

	t.Run("shrinking_below_what_is_in_use_fails_and_a_reboot_works", func(t *testing.T) {
		if err := n1.ResizeSysroot(64 << 10); err == nil {
			t.Error("shrinking the sysroot to 64 KiB under its content succeeded")
		}
		if err := n1.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		if n1.Reboots() != 1 || n1.BusAddress() == "" {
			t.Fatalf("after a reboot: %d reboots, bus %q", n1.Reboots(), n1.BusAddress())
		}
		if err := n2.ResizeSysroot(size); err != nil {
			t.Errorf("resizing to the same size: %v", err)
		}
	})

	readyOf := func(name string) (corev1.NodeCondition, error) {
		node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return corev1.NodeCondition{}, err
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady {
				return c, nil
			}
		}
		return corev1.NodeCondition{}, fmt.Errorf("node %s has no Ready condition", name)
	}

	t.Run("StopKubelet_stops_heartbeats_and_marks_the_Node_Unknown_StartKubelet_undoes_it", func(t *testing.T) {
		if err := n2.StopKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		c, err := readyOf(n2.Name)
		if err != nil {
			t.Fatal(err)
		}
		if c.Status != corev1.ConditionUnknown || c.Reason != harness.NodeLostReason {
			t.Fatalf("Ready after StopKubelet: %s (%s)", c.Status, c.Reason)
		}
		beats := n2.Kubelet.Heartbeats()
		time.Sleep(2500 * time.Millisecond) // the stand-in heartbeats every second
		if got := n2.Kubelet.Heartbeats(); got != beats {
			t.Errorf("%d heartbeats after StopKubelet", got-beats)
		}
		if c, err := readyOf(n2.Name); err != nil || c.Status != corev1.ConditionUnknown {
			t.Errorf("Ready 2.5s after StopKubelet: %+v, %v", c, err)
		}
		if err := n2.StopKubelet(ctx); err == nil {
			t.Error("stopping a stopped kubelet stand-in succeeded")
		}
		if err := n2.StartKubelet(ctx); err != nil {
			t.Fatal(err)
		}
		if c, err := readyOf(n2.Name); err != nil || c.Status != corev1.ConditionTrue {
			t.Errorf("Ready after StartKubelet: %+v, %v", c, err)
		}
	})

	t.Run("RemoveNode_deletes_the_Node_for_good", func(t *testing.T) {
		if err := w.RemoveNode(ctx, n2.Name); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2500 * time.Millisecond) // a running stand-in would have registered it again
		if _, err := kube.CoreV1().Nodes().Get(ctx, n2.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("node %s after RemoveNode: %v", n2.Name, err)
		}
		if err := n2.StartKubelet(ctx); err == nil {
			t.Error("StartKubelet on a removed node succeeded")
		}
		if c, err := readyOf(n1.Name); err != nil || c.Status != corev1.ConditionTrue {
			t.Errorf("the other node: Ready %+v, %v", c, err)
		}
	})

	if err := w.Close(); err != nil {
		t.Fatalf("closing the world: %v", err)
	}
	closed = true
	t.Run("close_unmounts_and_removes_the_sysroots", func(t *testing.T) {
		if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), dir) {
			t.Errorf("mounts left under %s", dir)
		}
		for _, n := range w.Nodes {
			if _, err := os.Stat(n.Sysroot.Path); !os.IsNotExist(err) {
				t.Errorf("sysroot of %s left: %v", n.Name, err)
			}
		}
	})
}

// sizeOf parses "size=<blocks>:<block size>" as printed by stat -f.
func sizeOf(t *testing.T, s string) int64 {
	t.Helper()
	var blocks, bsize int64
	if _, err := fmt.Sscanf(s, "size=%d:%d", &blocks, &bsize); err != nil {
		t.Errorf("parsing %q: %v", s, err)
	}
	return blocks * bsize
}

func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
