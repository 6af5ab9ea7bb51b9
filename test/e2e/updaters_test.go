package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/osimage"
)

// TestAnotherRegisteredUpdaterStopsTheUpdateUntilThePoolAllowsIt: zincati registered itself
// with the node's rpm-ostreed as the update driver (the way it does, through the bus), so the
// agent refuses to stage: Degraded ConflictingUpdater naming it, nothing staged, no cordon, no
// slot. Once the pool policy allows it and the admin sets retry, the update finishes with one
// reboot, and the agent registered itself as the driver when it staged.
func TestAnotherRegisteredUpdaterStopsTheUpdateUntilThePoolAllowsIt(t *testing.T) {
	w := ownWorld(t, 1)
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "updaters", Version: "2.8", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.8\n"},
	}}, true)

	zincati := connect(t, n)
	if err := zincati.Deploy(ctx, "", rpmostree.DeployOptions{RegisterDriver: "Zincati"}); err != nil {
		t.Fatalf("registering zincati as the update driver: %v", err)
	}
	drv, err := rpmostree.ReadUpdateDriver(filepath.Join(n.RunDir, "rpm-ostree", "update-driver.gv"))
	if err != nil || drv == nil || drv.Name != "Zincati" {
		t.Fatalf("update driver after zincati registered: %+v, %v", drv, err)
	}

	startAgentUp(ctx, t, w, n)
	reboots := n.Reboots()
	s, _ := annotateUntilDegraded(ctx, t, kube, n.Name, img.Ref, reason.ConflictingUpdater)
	if !strings.Contains(s.Message, "Zincati") || !strings.Contains(s.Message, updaters.PolicyKey) {
		t.Fatalf("message %q: want Zincati and the policy key named", s.Message)
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, kube, n.Name, string(reason.ConflictingUpdater), 10*time.Second, func(e corev1.Event) bool {
		return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "Zincati")
	})
	if st := status(t, zincati); st.Staged != nil {
		t.Errorf("staged %s while another updater owns the host", digestOf(st.Staged))
	}
	if node.Spec.Unschedulable || holds(ctx, t, kube, n.Name) {
		t.Errorf("cordoned (%v) or holding a slot after ConflictingUpdater", node.Spec.Unschedulable)
	}

	setPools(ctx, t, kube, "default:\n  "+updaters.PolicyKey+": [zincati]\n")
	setRetry(ctx, t, kube, n.Name, "allowed-zincati")
	waitNode(ctx, t, kube, n.Name, "Done on the new image", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots, want 1", got)
	}
	// /run is emptied by the reboot; the stand-in's log of the boot that staged says who
	// registered (the rpm-ostree journal line on a real host).
	logOfStagingBoot := filepath.Join(n.Dir, fmt.Sprintf("rpmostreed.%d.log", reboots))
	data, err := os.ReadFile(logOfStagingBoot)
	if err != nil {
		t.Fatal(err)
	}
	registered := false
	for _, line := range strings.Split(string(data), "\n") {
		registered = registered || (strings.Contains(line, "update driver registered") && strings.Contains(line, updaters.Self))
	}
	if !registered {
		t.Errorf("%s does not show the agent registering as the update driver %q", logOfStagingBoot, updaters.Self)
	}
}
