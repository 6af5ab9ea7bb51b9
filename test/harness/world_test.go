package harness_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
)

// ownListeners returns the TCP sockets in LISTEN state held open by this process (its children
// are checked separately: none may be left).
func ownListeners(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	mine := map[string]bool{}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && strings.HasPrefix(l, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fs := strings.Fields(line)
			if len(fs) > 9 && fs[3] == "0A" && mine[fs[9]] {
				out = append(out, fs[1])
			}
		}
	}
	return out
}

// childProcesses lists processes whose parent is this test process.
func childProcesses(t *testing.T) []string {
	t.Helper()
	var out []string
	me := fmt.Sprint(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		rest := s[strings.LastIndexByte(s, ')')+2:]
		if fs := strings.Fields(rest); len(fs) > 1 && fs[1] == me && fs[0] != "Z" {
			out = append(out, e.Name()+" "+s[:strings.LastIndexByte(s, ')')+1])
		}
	}
	return out
}

func TestWorld(t *testing.T) {
	requireRoot(t)
	listenersBefore := len(ownListeners(t))
	dir := t.TempDir()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w, err := harness.New(ctx, harness.Options{Nodes: 2, Dir: filepath.Join(dir, "world"), Log: testWriter{t}})
	if err != nil {
		t.Fatalf("starting the world: %v", err)
	}
	fmt.Printf("BENCH box-up (apiserver+registry+signed base+2 nodes): %.2fs\n", time.Since(began).Seconds())
	closed := false
	defer func() {
		if !closed {
			_ = w.Close()
		}
	}()

	t.Run("every_node_is_Ready_with_a_boot_id_and_its_stand_in_on_its_own_bus", func(t *testing.T) {
		for _, n := range w.Nodes {
			node, err := w.Kube.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if node.Status.NodeInfo.BootID == "" {
				t.Errorf("%s has no boot ID", n.Name)
			}
			if !strings.HasPrefix(n.BusAddress(), "unix:path="+n.RunDir) {
				t.Errorf("%s bus %q is not in its /run %s", n.Name, n.BusAddress(), n.RunDir)
			}
			booted, err := n.Booted()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(booted.Dir, "usr/lib/os-release")); err != nil {
				t.Errorf("%s booted deployment has no os-release: %v", n.Name, err)
			}
		}
	})

	t.Run("a_reboot_gives_a_new_boot_id_and_empties_run", func(t *testing.T) {
		n := w.Nodes[0]
		before := n.Kubelet.BootID()
		marker := filepath.Join(n.RunDir, "before-reboot")
		if err := os.WriteFile(marker, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := n.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		fmt.Printf("BENCH directory-node-reboot: %.2fs\n", time.Since(start).Seconds())
		if n.Reboots() != 1 || n.Kubelet.BootID() == before {
			t.Fatalf("reboots %d, boot ID %s → %s", n.Reboots(), before, n.Kubelet.BootID())
		}
		if _, err := os.Stat(marker); !os.IsNotExist(err) {
			t.Fatalf("/run survived the reboot: %v", err)
		}
		if n.BusAddress() == "" {
			t.Fatal("no bus after reboot")
		}
	})

	t.Run("the_agent_credential_carries_the_node_name", func(t *testing.T) {
		n := w.Nodes[1]
		kc, err := n.AgentKubeconfig(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if b, err := os.ReadFile(kc); err != nil || !strings.Contains(string(b), "token:") {
			t.Fatalf("kubeconfig %s: %v", kc, err)
		}
	})

	t.Run("the_transition_watcher_records_each_change_in_order_across_an_apiserver_restart", func(t *testing.T) {
		var mu sync.Mutex
		var notified []string
		tw, err := w.WatchTransitions(ctx, func(tr harness.Transition) {
			mu.Lock()
			defer mu.Unlock()
			notified = append(notified, tr.Node+" "+tr.Label())
		})
		if err != nil {
			t.Fatal(err)
		}
		defer tw.Stop()
		set := func(node, state, phase string) {
			t.Helper()
			patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q,%q:%q}}}`, nodestatus.AnnotationState, state, nodestatus.AnnotationPhase, phase)
			if _, err := w.Kube.Client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		waitNotified := func(n int) {
			t.Helper()
			for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				mu.Lock()
				got := len(notified)
				mu.Unlock()
				if got >= n {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d transitions notified, want %d", got, n)
				}
			}
		}
		set("node-1", "Working", "Draining")
		set("node-2", "Working", "Rebooting")
		set("node-2", "Working", "Rebooting") // no change: not a transition
		waitNotified(2)
		if err := w.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		if err := w.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		set("node-1", "Done", "")
		waitNotified(3)
		set("node-2", "Done", "")
		waitNotified(4)
		mu.Lock()
		got := strings.Join(notified, ", ")
		mu.Unlock()
		if want := "node-1 Draining, node-2 Rebooting, node-1 Done, node-2 Done"; got != want {
			t.Errorf("notified %q, want %q", got, want)
		}
		if of := tw.Of("node-1"); len(of) != 3 || !of[0].Baseline || of[1].Baseline || of[2].Label() != "Done" {
			t.Errorf("Of(node-1) = %+v, want the baseline, Draining, Done", of)
		}
		if ov := tw.Overlaps(); len(ov) != 1 || !strings.HasPrefix(ov[0], "node-1 and node-2 at +") {
			t.Errorf("Overlaps() = %v, want node-1 and node-2 once", ov)
		}
	})

	if err := w.Close(); err != nil {
		t.Fatalf("closing the world: %v", err)
	}
	closed = true
	t.Run("nothing_is_left_behind", func(t *testing.T) {
		if procs := childProcesses(t); len(procs) > 0 {
			t.Errorf("processes left: %v", procs)
		}
		if l := ownListeners(t); len(l) > listenersBefore {
			t.Errorf("listening sockets left: %v", l)
		}
		if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), dir) {
			t.Errorf("mounts left under %s", dir)
		}
		if ents, _ := os.ReadDir(filepath.Join(dir, "world", "nodes")); len(ents) > 0 {
			for _, e := range ents {
				if sub, _ := os.ReadDir(filepath.Join(dir, "world", "nodes", e.Name(), "sysroot")); len(sub) > 0 {
					t.Errorf("sysroot of %s left", e.Name())
				}
			}
		}
	})
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
