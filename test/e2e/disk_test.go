package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/daemon/agent"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// The disk test's sizes: a node whose sysroot is its own 64 MiB filesystem, and an image whose
// layer holds 24 MiB of random bytes (gzip cannot shrink them), so staging it asks for about
// 3 × 24 MiB: more than the sysroot has.
const (
	diskSysroot = 64 << 20
	diskPayload = 24 << 20
)

// incompressible is n bytes of deterministic random data.
func incompressible(n int) string {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{'l', 'a', 'y', 'e', 'r', 'd'}).Read(b) // never fails
	return string(b)
}

// imageSize is the image's size as the agent's Validate reads it: the config plus every layer,
// compressed, as the manifest lists them.
func imageSize(t *testing.T, img *osimage.Image) int64 {
	t.Helper()
	m, err := img.OCIImage().Manifest()
	if err != nil {
		t.Fatalf("the manifest of %s: %v", img.Pinned, err)
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	return size
}

var sysrootFree = regexp.MustCompile(`the sysroot has (\d+) free`)

// TestNotEnoughDiskEndsInsufficientDiskAndRecoversOnRetryOnceTheSysrootGrows: on a node whose
// sysroot is its own 64 MiB filesystem, an image needing about 3 × its compressed size (a 24 MiB
// incompressible layer) ends Degraded InsufficientDisk, the message naming the sizes, before
// anything is pulled: nothing staged, nothing written to the sysroot, no cordon, no slot, no
// reboot. Once the sysroot is grown, setting layerd.dev/retry finishes the update with one
// reboot.
func TestNotEnoughDiskEndsInsufficientDiskAndRecoversOnRetryOnceTheSysrootGrows(t *testing.T) {
	testBegan := time.Now()
	w := harness.Start(t, harness.Options{Nodes: 1, SysrootSize: diskSysroot})
	t.Logf("own world with a %d MiB sysroot filesystem up in %v", diskSysroot>>20, time.Since(testBegan).Round(time.Millisecond))
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx := agentContext(t, 15*time.Minute)
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "big", Version: "2.9", Files: map[string]osimage.File{
		"usr/bin/mytool":              {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.9\n"},
		"usr/share/layerd-test/noise": {Content: incompressible(diskPayload)},
	}}, true)
	size := imageSize(t, img)
	need := agent.StagingSpace(size)
	freeBefore, err := n.SysrootFree()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("image %d bytes compressed, staging needs %d; the sysroot has %d free", size, need, freeBefore)
	if freeBefore >= need {
		t.Fatalf("the test's image is too small: the sysroot has %d free, staging needs %d", freeBefore, need)
	}

	startAgentUp(ctx, t, w, n)
	reboots := n.Reboots()
	s, phases := annotateUntilDegraded(ctx, t, kube, n.Name, img.Ref, reason.InsufficientDisk)

	t.Run("the_message_and_the_event_name_the_sizes", func(t *testing.T) {
		for _, want := range []string{img.Pinned, fmt.Sprintf("needs about %d bytes", need), fmt.Sprintf("%d compressed", size)} {
			if !strings.Contains(s.Message, want) {
				t.Errorf("message %q lacks %q", s.Message, want)
			}
		}
		m := sysrootFree.FindStringSubmatch(s.Message)
		if m == nil {
			t.Fatalf("message %q does not name the free space", s.Message)
		}
		free, _ := strconv.ParseUint(m[1], 10, 64)
		if diff := int64(free) - int64(freeBefore); free >= need || diff < -(1<<20) || diff > 1<<20 {
			t.Errorf("the message says %d free; statfs said %d, staging needs %d", free, freeBefore, need)
		}
		waitEvent(ctx, t, kube, n.Name, string(reason.InsufficientDisk), 10*time.Second, func(e corev1.Event) bool {
			return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, fmt.Sprintf("needs about %d bytes", need))
		})
	})

	t.Run("nothing_was_pulled_staged_cordoned_or_reserved", func(t *testing.T) {
		if containsPhase(phases, string(nodestatus.PhaseStaged)) {
			t.Errorf("Staged observed before the refusal: %v", phases)
		}
		checkRefusedCleanly(ctx, t, w, n, reboots)
		free, err := n.SysrootFree()
		if err != nil {
			t.Fatal(err)
		}
		if d := int64(freeBefore) - int64(free); d > 1<<20 {
			t.Errorf("the sysroot lost %d bytes to a refused update", d)
		}
	})
	if t.Failed() {
		return
	}

	t.Run("a_retry_after_the_sysroot_grew_finishes_the_update_with_one_reboot", func(t *testing.T) {
		grown := int64(diskSysroot) + int64(need)
		if err := n.ResizeSysroot(grown); err != nil {
			t.Fatal(err)
		}
		retryUntilDoneOnce(ctx, t, kube, n, img, "after-the-sysroot-grew", reboots)
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if s := nodestatus.Read(node); node.Spec.Unschedulable || s.CordonedBy != "" || s.Reason != "" {
			t.Errorf("after Done: unschedulable %v, cordoned-by %q, reason %q", node.Spec.Unschedulable, s.CordonedBy, s.Reason)
		}
		if holds(ctx, t, kube, n.Name) {
			t.Errorf("%s still holds a slot after Done", n.Name)
		}
		free, _ := n.SysrootFree()
		t.Logf("the sysroot has %d of %d bytes free after the update", free, grown)
	})
	fmt.Printf("BENCH e2e-insufficient-disk (own world, refusal, grow, retry): %.2fs\n", time.Since(testBegan).Seconds())
}
