package harness_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/test/harness"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test needs root (mount namespaces); run it as root, as CI does")
	}
}

func TestPodSeesTheNodeTheWayADaemonSetPodDoes(t *testing.T) {
	requireRoot(t)
	d := t.TempDir()
	for _, p := range []string{"run/dbus", "root/etc", "root/var", "root/sysroot", "var/lib", "sysroot/ostree"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(p, s string) {
		if err := os.WriteFile(filepath.Join(d, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("run/marker", "node-run")
	write("root/etc/hostname", "node-1")
	write("var/lib/state", "node-var")
	write("sysroot/ostree/x", "sysroot")

	script := `cat /run/marker; echo; cat /host/etc/hostname; echo; cat /host/var/lib/state; echo; cat /host/sysroot/ostree/x; echo
if touch /host/sysroot/ostree/y 2>/dev/null; then echo sysroot-writable; else echo sysroot-ro; fi
echo edited > /host/etc/hostname && echo etc-writable`
	var out, errb bytes.Buffer
	pod, err := harness.StartPod(harness.PodSpec{
		RunDir: filepath.Join(d, "run"), Root: filepath.Join(d, "root"), Var: filepath.Join(d, "var"),
		Sysroot: filepath.Join(d, "sysroot"), Path: "/bin/sh", Args: []string{"sh", "-c", script},
		Stdout: &out, Stderr: &errb,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := pod.Wait(ctx); err != nil {
		t.Fatalf("pod failed: %v\nstderr: %s", err, errb.String())
	}
	got := strings.Fields(out.String())
	want := []string{"node-run", "node-1", "node-var", "sysroot", "sysroot-ro", "etc-writable"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("pod saw %q, want %q (stderr %s)", got, want, errb.String())
	}
	if b, _ := os.ReadFile(filepath.Join(d, "root/etc/hostname")); string(b) != "edited\n" {
		t.Fatalf("a write through /host/etc did not reach the node's /etc: %q", b)
	}
	if _, err := os.Stat(filepath.Join(d, "sysroot/ostree/y")); err == nil {
		t.Fatal("a write through the read-only /host/sysroot reached the sysroot")
	}
	if m, _ := os.ReadFile("/proc/self/mountinfo"); strings.Contains(string(m), d) {
		t.Fatalf("the pod's mounts leaked into the host namespace:\n%s", m)
	}
}

func TestPodKillEndsTheWholeProcessGroup(t *testing.T) {
	requireRoot(t)
	d := t.TempDir()
	for _, p := range []string{"run", "root/sysroot", "sysroot"} {
		if err := os.MkdirAll(filepath.Join(d, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pod, err := harness.StartPod(harness.PodSpec{RunDir: filepath.Join(d, "run"), Root: filepath.Join(d, "root"),
		Sysroot: filepath.Join(d, "sysroot"), Path: "/bin/sleep", Args: []string{"sleep", "300"}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := pod.Kill(); err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > 5*time.Second {
		t.Fatalf("kill took %v", time.Since(start))
	}
	select {
	case <-pod.Done():
	default:
		t.Fatal("pod not done after Kill")
	}
	if !pod.Stopped() {
		t.Fatal("a killed pod does not report Stopped")
	}
}
