package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// TestOnceStagesAndRebootsANodeWithoutKubernetes runs `layerd once` in a pod on the node of a
// one-node box (node-in-a-box, test/harness) through the node's rpm-ostreed: an unsigned image is refused with
// nothing staged, a signed one is staged by digest, and --reboot boots into it once.
func TestOnceStagesAndRebootsANodeWithoutKubernetes(t *testing.T) {
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	bin := layerdBinary(t)
	w := harness.Start(t, harness.Options{Nodes: 1, Log: log})
	n := w.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	signed, err := w.Images.Layered(ctx, w.Base, osimage.Spec{Repo: "fcos/os", Tag: "once", Version: "2.0-once",
		Files: map[string]osimage.File{"usr/bin/once-tool": {Mode: 0o755, Content: "#!/bin/sh\necho once\n"}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := osimage.Sign(ctx, signed.Pinned, w.Keys); err != nil {
		t.Fatal(err)
	}
	unsigned, err := w.Images.Layered(ctx, w.Base, osimage.Spec{Repo: "fcos/os", Tag: "once-unsigned", Version: "2.0-unsigned",
		Files: map[string]osimage.File{"usr/bin/unsigned-tool": {Mode: 0o755, Content: "#!/bin/sh\necho unsigned\n"}}})
	if err != nil {
		t.Fatal(err)
	}
	trust := []string{"--policy", w.Trust.PolicyPath, "--registries-d", w.Trust.RegistriesDDir,
		"--registries-conf", w.Trust.RegistriesConfPath}
	onceStatus := func(t *testing.T) *rpmostree.Status {
		t.Helper()
		c, err := rpmostree.NewWithAddress(ctx, n.BusAddress(), rpmostree.Options{ClientID: "layerd-e2e-once"})
		if err != nil {
			t.Fatalf("connecting to rpm-ostree on %s: %v", n.Name, err)
		}
		defer func() { _ = c.Close() }()
		st, err := c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	step := func(name string, f func(t *testing.T)) {
		t.Helper()
		if !t.Run(name, f) {
			t.FailNow()
		}
	}

	step("an_unsigned_image_exits_1_with_SignatureRejected_and_nothing_staged", func(t *testing.T) {
		out, errs, code, stop := runOnceInPod(t, n, bin, append(append([]string{"once"}, trust...), unsigned.Ref)...)
		stop()
		if code != 1 || !strings.Contains(out, "SignatureRejected") {
			t.Fatalf("exit %d, want 1 with SignatureRejected\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		if st := onceStatus(t); st.Staged != nil {
			t.Fatalf("staged %s after a rejected image", st.Staged.ID)
		}
	})

	step("a_signed_image_is_staged_by_its_digest", func(t *testing.T) {
		out, errs, code, stop := runOnceInPod(t, n, bin, append(append([]string{"once"}, trust...), signed.Ref)...)
		stop()
		if code != 0 {
			t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
		}
		if !strings.Contains(out, "staged "+signed.Digest.String()) {
			t.Errorf("output does not report the staged digest:\n%s", out)
		}
		st := onceStatus(t)
		if st.Staged == nil || st.Staged.ContainerImageReferenceDigest != signed.Digest.String() {
			t.Fatalf("staged %v, want %s", st.Staged, signed.Digest)
		}
		if digestOf(st.Booted) != w.Base.Digest.String() {
			t.Errorf("booted %s, want the base %s", digestOf(st.Booted), w.Base.Digest)
		}
	})

	step("reboot_finalizes_and_the_node_boots_the_image_exactly_once", func(t *testing.T) {
		reboots := n.Reboots()
		out, errs, _, stop := runOnceInPod(t, n, bin, append(append([]string{"once", "--reboot"}, trust...), signed.Ref)...)
		deadline := time.Now().Add(2 * time.Minute)
		for n.Reboots() < reboots+1 {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not reboot in 2m\nstdout:\n%s\nstderr:\n%s", n.Name, out, errs)
			}
			time.Sleep(50 * time.Millisecond)
		}
		// The pod is started again after the boot (as a DaemonSet's would be): it must find the
		// image booted and not reboot again.
		time.Sleep(3 * time.Second)
		stop()
		if got := n.Reboots(); got != reboots+1 {
			t.Errorf("%d reboots, want %d\nstdout:\n%s\nstderr:\n%s", got-reboots, 1, out, errs)
		}
		st := onceStatus(t)
		if digestOf(st.Booted) != signed.Digest.String() || st.Staged != nil {
			t.Fatalf("booted %s, staged %v; want %s booted\nstdout:\n%s\nstderr:\n%s", digestOf(st.Booted), st.Staged, signed.Digest, out, errs)
		}
	})
}

// runOnceInPod runs layerd with args in a pod on n, waits for its first process and returns
// its output and exit code (-1 when it was killed) and the function that removes the pod.
func runOnceInPod(t *testing.T, n *harness.Node, bin string, args ...string) (string, string, int, func()) {
	t.Helper()
	var stdout, stderr onceBuffer
	pod, stop, err := n.RunPod(harness.PodTemplate{
		Name: "layerd-once", Path: bin, Args: append([]string{"layerd"}, args...),
		Env: []string{podSystemBus}, Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatalf("starting layerd %v in a pod on %s: %v", args, n.Name, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	code := 0
	if werr := pod.Wait(ctx); werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			_ = stop()
			t.Fatalf("layerd %v in a pod on %s: %v\nstdout:\n%s\nstderr:\n%s", args, n.Name, werr, stdout.String(), stderr.String())
		}
		code = ee.ExitCode()
	}
	return stdout.String(), stderr.String(), code, func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the pod: %v", err)
		}
	}
}

// onceBuffer is a bytes.Buffer safe for the pod's writers and the test's reads.
type onceBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *onceBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *onceBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
