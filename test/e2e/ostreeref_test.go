package e2e_test

import (
	"context"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/osimage"
)

// TestAHostBootedFromAnOstreeRefIsReportedAndMovesToAnImage: a node that boots a plain ostree
// ref (no container image, as a host installed from an ostree remote does) is Done with a
// message naming the ref and commit and no current-image; a desired-image then rebases it to
// the container image like any update, with one reboot.
func TestAHostBootedFromAnOstreeRefIsReportedAndMovesToAnImage(t *testing.T) {
	w := ownWorld(t, 1)
	n := w.Nodes[0]
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	img := ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "from-ref", Version: "2.9", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.9\n"},
	}}, true)

	// The installed commit is also the local ref <os>/install: rebase onto it and reboot.
	ref := n.Sysroot.OSName + "/install"
	c := connect(t, n)
	if err := c.Rebase(ctx, ref, rpmostree.RebaseOptions{}); err != nil {
		t.Fatalf("rebasing onto the ostree ref %s: %v", ref, err)
	}
	if err := n.Reboot(ctx); err != nil {
		t.Fatal(err)
	}
	booted := status(t, connect(t, n)).Booted
	if booted == nil || booted.Origin != ref || booted.IsContainer() {
		t.Fatalf("booted %+v, want the plain ref %s", booted, ref)
	}

	startAgentPod(ctx, t, w, n)
	waitNode(ctx, t, kube, n.Name, "Done on the ref", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && strings.Contains(s.Message, "ostree ref "+ref)
	})
	node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := nodestatus.Read(node)
	t.Logf("message: %s", s.Message)
	if s.CurrentImage != "" || !strings.Contains(s.Message, "commit "+booted.Checksum[:12]) {
		t.Errorf("current-image %q message %q: want no current-image and the ref's commit named", s.CurrentImage, s.Message)
	}

	reboots := n.Reboots()
	annotate(ctx, t, kube, n.Name, img.Ref)
	waitNode(ctx, t, kube, n.Name, "Done on the image", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots, want 1", got)
	}
}
