package e2e_test

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// TestAFailedFinalizationIsReportedWithTheJournalsError: on a booted-tier node the staged
// deployment is finalized at shutdown by ostree-finalize-staged.service. When that fails (here:
// the sysroot's /boot made immutable after staging, so ostree cannot write the boot entries),
// the node boots its old deployment; the agent reports Degraded BootedWrongImage carrying the
// error that unit logged in the previous boot's journal, keeps the slot (the pool stops) and
// uncordons the node, which runs its old image.
func TestAFailedFinalizationIsReportedWithTheJournalsError(t *testing.T) {
	var boxLog io.Writer = io.Discard
	if testing.Verbose() {
		boxLog = os.Stderr
	}
	w := harness.Start(t, harness.Options{Nodes: 1, Booted: 1, Log: boxLog})
	n := w.Nodes[0]
	if !n.BootedTier() {
		t.Fatalf("%s is not a booted-tier node", n.Name)
	}
	kube := w.Kube.Client
	ctx := agentContext(t, 15*time.Minute)
	img, err := w.BootedImage(ctx, osimage.Spec{Repo: harness.BootedBaseRepo, Tag: "unfinalized", Version: "2.1", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.1\n"},
	}})
	if err != nil {
		t.Fatalf("building the layered image: %v", err)
	}
	if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
		t.Fatalf("signing %s: %v", img.Pinned, err)
	}
	before, err := n.Booted()
	if err != nil {
		t.Fatal(err)
	}

	// Manual reboots hold the node after staging, so /boot can be locked before finalizing.
	setPools(ctx, t, kube, "default:\n  rebootPolicy: Manual\n")
	startAgentUp(ctx, t, w, n, "--log-journal", "auto")
	annotate(ctx, t, kube, n.Name, img.Ref)
	waitNode(ctx, t, kube, n.Name, "staged, waiting for the approval", func(s nodestatus.Status) bool {
		return s.Phase == nodestatus.PhaseWaitingForSlot && s.StagedImage == img.Pinned
	})
	boot := filepath.Join(n.Sysroot.Path, "boot")
	if out, err := exec.Command("chattr", "+i", boot).CombinedOutput(); err != nil {
		t.Fatalf("chattr +i %s: %v: %s", boot, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("chattr", "-i", boot).CombinedOutput(); err != nil {
			t.Errorf("chattr -i %s: %v: %s", boot, err, out)
		}
	})
	reboots := n.Reboots()
	approve(ctx, t, kube, n.Name, img.Digest.String())
	waitNode(ctx, t, kube, n.Name, "Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })

	node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := nodestatus.Read(node)
	t.Logf("message: %s", s.Message)
	if s.Reason != reason.BootedWrongImage {
		t.Fatalf("reason %s (%q), want %s", s.Reason, s.Message, reason.BootedWrongImage)
	}
	for _, want := range []string{"the previous boot's finalize failed", "Operation not permitted", "unit result"} {
		if !strings.Contains(s.Message, want) {
			t.Errorf("message %q lacks %q (the error of ostree-finalize-staged.service in the previous boot)", s.Message, want)
		}
	}
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots, want 1", got)
	}
	after, err := n.Booted()
	if err != nil {
		t.Fatal(err)
	}
	if after.Checksum != before.Checksum {
		t.Errorf("booted %s after the failed finalization, want the old deployment %s", after.Checksum, before.Checksum)
	}
	waitFor(t, "the node uncordoned, the slot kept", time.Minute, func() bool {
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		return err == nil && !node.Spec.Unschedulable && holds(ctx, t, kube, n.Name)
	})
}
