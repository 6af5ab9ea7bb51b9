package e2e_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// The limits of the /etc and /var preview (docs/hostfs.md#limits) through the agent: an image
// whose var/ holds a symlink loop, a symlink out of the tree and a 10 000-file tree, on a node
// whose live /var has a FIFO where the image ships a regular file. The agent runs with a small
// --hostfs-max-files, so the /var walk stops inside the big tree; the walk is in name order,
// so the loop (lib/loop) and the FIFO (lib/pipe) are met before it (lib/tree).

const (
	limitBigFiles = 10_000
	limitMaxFiles = 1000
	limitOutside  = "../../../../etc/shadow"
)

func limitsSpec(tag, version string) osimage.Spec {
	files := map[string]osimage.File{
		"var/lib/loop/a":    {Symlink: "b"},
		"var/lib/loop/b":    {Symlink: "a"},
		"var/lib/loop/self": {Symlink: "self"},
		"var/lib/loop/out":  {Symlink: limitOutside},
		"var/lib/pipe":      {Content: "a regular file in the image\n"},
	}
	for i := range limitBigFiles {
		files[fmt.Sprintf("var/lib/tree/f%05d", i)] = osimage.File{Content: "small\n"}
	}
	return osimage.Spec{Repo: "fcos/os", Tag: tag, Version: version, Files: files}
}

func TestHostFSPreviewLimitsThroughTheAgent(t *testing.T) {
	w := ownWorld(t, 1)
	n, kube := w.Nodes[0], w.Kube.Client
	ctx := agentContext(t, 8*time.Minute)

	began := time.Now()
	img := ownImage(t, w, limitsSpec("limits", "2.9"), true)
	t.Logf("image with %d files under var/ built, pushed and signed in %v", limitBigFiles+5, time.Since(began).Round(time.Millisecond))

	pipe := filepath.Join(n.Sysroot.StaterootVar(), "lib/pipe")
	if err := os.MkdirAll(filepath.Dir(pipe), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(pipe, 0o644); err != nil {
		t.Fatalf("the FIFO in the live /var: %v", err)
	}
	holdPool(ctx, t, kube, nodestatus.DefaultPool)
	staged := watchStagedMessages(ctx, t, w)

	agent := startAgentUp(ctx, t, w, n, "--hostfs-max-files", strconv.Itoa(limitMaxFiles))
	reboots := n.Reboots()
	began = time.Now()
	annotate(ctx, t, kube, n.Name, img.Ref)
	waitHeldBack(ctx, t, kube, n.Name)
	t.Logf("staged and previewed in %v", time.Since(began).Round(time.Millisecond))
	rep := readReport(t, filepath.Join(n.RunDir, "layerd/report.json"))
	logLimitsReport(t, rep)
	limitSentence := fmt.Sprintf(" The preview stopped at a limit (max-files: stopped after %d entries): the counts are partial.", limitMaxFiles)

	t.Run("the_message_and_the_event_say_the_preview_hit_the_limit", func(t *testing.T) {
		msg := staged.last(n.Name)
		t.Logf("Staged message: %s", msg)
		for _, want := range []string{"/var: ", "(varPolicy Report: not created): lib/loop, lib/loop/a, lib/loop/b, lib/loop/out, lib/loop/self, lib/pipe, ",
			" more." + limitSentence} {
			if !strings.Contains(msg, want) {
				t.Errorf("the Staged message lacks %q", want)
			}
		}
		ev := waitEvent(ctx, t, kube, n.Name, string(reason.VarContentNotApplied), 10*time.Second, func(e corev1.Event) bool {
			return strings.HasSuffix(e.Message, limitSentence) && strings.Contains(e.Message, img.Digest.String())
		})
		t.Logf("%s Event: %s", ev.Reason, ev.Message)
		if evs := nodeEvents(ctx, t, kube, n.Name, string(reason.HostPreviewFailed)); len(evs) > 0 {
			t.Errorf("the preview failed: %s", describeEvents(evs))
		}
	})

	t.Run("report_json_is_truncated_at_the_limit_it_names", func(t *testing.T) {
		vr := rep.Var
		if vr == nil || rep.Etc == nil {
			t.Fatalf("the report has no /var or /etc preview")
		}
		want := fmt.Sprintf("max-files: stopped after %d entries", limitMaxFiles)
		if !rep.Summary.Truncated || !vr.Truncated || vr.Limit != want || vr.FilesVisited != limitMaxFiles {
			t.Errorf("summary truncated %t, var truncated %t, limit %q, visited %d; want truncated at %q",
				rep.Summary.Truncated, vr.Truncated, vr.Limit, vr.FilesVisited, want)
		}
		if rep.Etc.Truncated {
			t.Errorf("the /etc preview stopped too (%s): the limit must be hit in /var", rep.Etc.Limit)
		}
		tree := 0
		for _, e := range vr.Entries {
			if strings.HasPrefix(e.Path, "lib/tree/") {
				tree++
			}
		}
		if tree == 0 || tree >= limitMaxFiles || rep.Summary.VarNotApplied >= limitMaxFiles {
			t.Errorf("%d entries of the big tree, %d paths not applied: want some, fewer than the limit %d",
				tree, rep.Summary.VarNotApplied, limitMaxFiles)
		}
	})

	byPath := map[string]hostfs.VarEntry{}
	if rep.Var != nil {
		for _, e := range rep.Var.Entries {
			byPath[e.Path] = e
		}
	}

	t.Run("the_loop_and_the_way_out_are_listed_by_target_never_followed", func(t *testing.T) {
		for p, target := range map[string]string{"lib/loop/a": "b", "lib/loop/b": "a", "lib/loop/self": "self", "lib/loop/out": limitOutside} {
			e, ok := byPath[p]
			switch {
			case !ok:
				t.Errorf("%s: not in the report", p)
			case e.Status != hostfs.VarMissing || e.Shipped == nil || e.Shipped.Kind != hostfs.KindSymlink ||
				e.Shipped.Target != target || e.Shipped.SHA256 != "" || e.Shipped.Size != 0:
				t.Errorf("%s: %s %+v; want a missing symlink to %q, not followed", p, e.Status, e.Shipped, target)
			}
		}
	})

	t.Run("the_fifo_is_reported_by_type_and_never_read", func(t *testing.T) {
		e, ok := byPath["lib/pipe"]
		if !ok {
			t.Fatalf("lib/pipe: not in the report")
		}
		if e.Status != hostfs.VarTypeDiffers || e.Live == nil || e.Live.Kind != hostfs.KindFIFO || e.Live.SHA256 != "" ||
			e.Shipped == nil || e.Shipped.Kind != hostfs.KindFile {
			t.Errorf("lib/pipe: %s, live %+v, shipped %+v; want type-differs, a FIFO on the host never read", e.Status, e.Live, e.Shipped)
		}
	})

	releasePool(ctx, t, kube, nodestatus.DefaultPool)
	phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	t.Logf("Done after %v: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))

	t.Run("a_preview_at_its_limit_never_degrades_the_node", func(t *testing.T) {
		for _, p := range phases {
			if strings.Contains(p, string(nodestatus.StateDegraded)) {
				t.Errorf("the node went through %s", p)
			}
		}
		waitReboots(t, n, reboots+1, 30*time.Second)
		if got := n.Reboots() - reboots; got != 1 {
			t.Errorf("%d reboots, want 1", got)
		}
		if fi, err := os.Lstat(pipe); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			t.Errorf("the host's FIFO: %v %v", fi, err)
		}
	})

	// Without the small limit the same content is counted in full.
	agent.endWatch()
	if err := agent.stop(); err != nil {
		t.Fatalf("stopping the agent: %v", err)
	}
	agent.stop = func() error { return nil }
	img2 := ownImage(t, w, limitsSpec("limits-full", "2.10"), true)
	waitSlotFree(ctx, t, nodestatus.DefaultPool, kube)
	holdPool(ctx, t, kube, nodestatus.DefaultPool)
	startAgentUp(ctx, t, w, n)
	began = time.Now()
	annotate(ctx, t, kube, n.Name, img2.Ref)
	waitHeldBack(ctx, t, kube, n.Name)
	t.Logf("staged and previewed without the small limit in %v", time.Since(began).Round(time.Millisecond))
	full := readReport(t, filepath.Join(n.RunDir, "layerd/report.json"))
	logLimitsReport(t, full)

	t.Run("without_the_small_limit_the_full_count_is_reported", func(t *testing.T) {
		msg := staged.last(n.Name)
		t.Logf("Staged message: %s", msg)
		if strings.Contains(msg, "stopped at a limit") {
			t.Errorf("the Staged message speaks of a limit")
		}
		vr := full.Var
		if vr == nil {
			t.Fatal("the report has no /var preview")
		}
		// lib/loop, its 4 links, lib/pipe, lib/tree and its files.
		if want := limitBigFiles + 7; full.Summary.Truncated || vr.Truncated || vr.Limit != "" ||
			full.Summary.VarNotApplied != want || vr.Counts[hostfs.VarMissing] != want-1 || vr.Counts[hostfs.VarTypeDiffers] != 1 {
			t.Errorf("truncated %t, limit %q, not applied %d, counts %v; want %d paths, nothing truncated",
				vr.Truncated, vr.Limit, full.Summary.VarNotApplied, vr.Counts, want)
		}
		if !strings.Contains(msg, fmt.Sprintf("/var: %d paths the image ships are not on the host", limitBigFiles+7)) {
			t.Errorf("the Staged message lacks the full count")
		}
	})
	releasePool(ctx, t, kube, nodestatus.DefaultPool)
	waitNode(ctx, t, kube, n.Name, "Done on "+img2.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img2.Pinned
	})
}

// stagedMessages keeps the last Staged message of each node.
type stagedMessages struct {
	mu  sync.Mutex
	msg map[string]string
}

func (s *stagedMessages) last(node string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.msg[node]
}

func watchStagedMessages(ctx context.Context, t *testing.T, w *harness.World) *stagedMessages {
	t.Helper()
	s := &stagedMessages{msg: map[string]string{}}
	tw, err := w.WatchTransitions(ctx, func(tr harness.Transition) {
		if tr.Status.Phase == nodestatus.PhaseStaged {
			s.mu.Lock()
			s.msg[tr.Node] = tr.Status.Message
			s.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tw.Stop)
	return s
}

// waitHeldBack waits until node waits for the slot "maintenance" holds: staged and previewed.
func waitHeldBack(ctx context.Context, t *testing.T, kube kubernetes.Interface, node string) {
	t.Helper()
	waitNode(ctx, t, kube, node, "WaitingForSlot", func(s nodestatus.Status) bool {
		return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, "held by "+maintenance)
	})
}

// waitSlotFree waits until the agent released slot 0 of pool (it deletes the Lease).
func waitSlotFree(ctx context.Context, t *testing.T, pool string, kube kubernetes.Interface) {
	t.Helper()
	waitFor(t, "slot 0 of "+pool+" released", 30*time.Second, func() bool {
		_, err := kube.CoordinationV1().Leases(harness.AgentNamespace).Get(ctx, coord.LeaseName(pool, 0), metav1.GetOptions{})
		return apierrors.IsNotFound(err)
	})
}

func logLimitsReport(t *testing.T, rep hostfs.Report) {
	t.Helper()
	if rep.Var == nil || rep.Etc == nil {
		return
	}
	t.Logf("report.json: summary %+v; /etc visited %d (truncated %t); /var visited %d, counts %v, present %d, truncated %t %q",
		rep.Summary, rep.Etc.FilesVisited, rep.Etc.Truncated, rep.Var.FilesVisited, rep.Var.Counts, rep.Var.Present,
		rep.Var.Truncated, rep.Var.Limit)
}
