package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// crashWorld starts a private node-in-a-box for one test (never the package's shared World, so
// the kills and knobs here cannot disturb other tests).
func crashWorld(t *testing.T, nodes int) *harness.World {
	t.Helper()
	if os.Getenv("LAYERD_K8S_BIN") == "" {
		t.Fatal("LAYERD_K8S_BIN is not set (export LAYERD_K8S_BIN=$(hack/deps.sh))")
	}
	var log io.Writer = io.Discard
	if testing.Verbose() {
		log = os.Stderr
	}
	began := time.Now()
	w := harness.Start(t, harness.Options{Nodes: nodes, Log: log})
	t.Logf("own world (%d nodes) up in %v", nodes, time.Since(began).Round(time.Millisecond))
	return w
}

// crashImage builds and signs a layered image in w's own registry. The package's image cache
// is keyed by tag across worlds, so it is not used here.
func crashImage(t *testing.T, w *harness.World, tag, version string) *osimage.Image {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := w.Images.Layered(ctx, w.Base, osimage.Spec{Repo: "fcos/os", Tag: tag, Version: version, Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool " + version + "\n"},
		"etc/motd":       {Content: "Welcome to layerd test OS " + version + "\n"},
	}})
	if err != nil {
		t.Fatalf("building image %s: %v", tag, err)
	}
	if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
		t.Fatalf("signing %s: %v", img.Pinned, err)
	}
	return img
}

// crashAgent runs `layerd agent` on one node as a pod and restarts it under a new pod name.
type crashAgent struct {
	t          *testing.T
	w          *harness.World
	n          *harness.Node
	bin        string
	kubeconfig string
	logs       *syncBuffer
	name       string
	gen        int
	stop       func() error
}

func startCrashAgent(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node) *crashAgent {
	t.Helper()
	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		t.Fatalf("agent kubeconfig: %v", err)
	}
	a := &crashAgent{t: t, w: w, n: n, bin: layerdBinary(t), kubeconfig: kubeconfig, logs: &syncBuffer{}}
	a.start()
	t.Cleanup(func() {
		if err := a.stop(); err != nil {
			t.Logf("stopping the agent pod: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", a.logs.String())
		}
	})
	return a
}

func (a *crashAgent) start() {
	a.t.Helper()
	a.gen++
	a.name = fmt.Sprintf("layerd-agent-%d", a.gen)
	tmpl := a.w.AgentPod(a.n, a.bin, a.kubeconfig, a.logs)
	tmpl.Name = a.name
	_, stop, err := a.n.RunPod(tmpl)
	if err != nil {
		a.t.Fatalf("starting the agent pod on %s: %v", a.n.Name, err)
	}
	a.stop = stop
}

// kill SIGKILLs the agent's current process and removes its pod.
func (a *crashAgent) kill() {
	a.t.Helper()
	pod := a.n.Pod(a.name)
	if pod == nil {
		a.t.Fatalf("no pod %s on %s", a.name, a.n.Name)
	}
	if err := pod.Kill(); err != nil {
		a.t.Fatalf("killing the agent: %v", err)
	}
	if err := a.stop(); err != nil {
		a.t.Logf("stopping the killed pod: %v", err)
	}
	a.stop = func() error { return nil }
}

// phaseNow reads the node's state/phase as the API shows it now.
func phaseNow(ctx context.Context, t *testing.T, w *harness.World, node string) (nodestatus.Status, bool) {
	t.Helper()
	n, err := w.Kube.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading node %s: %v", node, err)
	}
	return nodestatus.Read(n), n.Spec.Unschedulable
}

// blobGETs counts successful blob GETs in the registry's access log from index from on.
func blobGETs(w *harness.World, from int) int {
	log := w.Registry.AccessLog()
	c := 0
	for _, a := range log[min(from, len(log)):] {
		if a.Kind == registry.KindBlob && a.Method == http.MethodGet && a.Status/100 == 2 {
			c++
		}
	}
	return c
}

// readLog is the node's stand-in log of boot number boot.
func readLog(t *testing.T, n *harness.Node, boot int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, fmt.Sprintf("rpmostreed.%d.log", boot)))
	if err != nil {
		t.Fatalf("reading the stand-in log: %v", err)
	}
	return string(b)
}

// checkDoneOn checks the end state after an update to img: booted img, nothing staged, the
// node uncordoned, one reboot since reboots.
func checkDoneOn(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, img *osimage.Image, reboots int) {
	t.Helper()
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots counted by the harness, want exactly 1", got)
	}
	st := status(t, connect(t, n))
	if digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
		t.Errorf("rpm-ostree: booted %s, staged %s; want %s booted, nothing staged", digestOf(st.Booted), digestOf(st.Staged), img.Digest)
	}
	s, unsched := phaseNow(ctx, t, w, n.Name)
	if unsched || s.CordonedBy != "" {
		t.Errorf("after Done: unschedulable %v, cordoned-by %q", unsched, s.CordonedBy)
	}
	if s.DesiredDigest != img.Digest.String() {
		t.Errorf("desired-digest %q, want %s", s.DesiredDigest, img.Digest)
	}
}

// TestSIGKILLInEachPhaseThenRestartConvergesWithOneReboot kills the agent pod (SIGKILL) when the
// Node first shows Staging (mid-pull), Draining (after the cordon), Rebooting (the finalize held
// by the stand-in's stall knob) and Confirming (after the boot); the restarted agent brings the
// node to Done on the new digest with exactly one reboot, without pulling again once the staged
// deployment matched, and uncordoned.
func TestSIGKILLInEachPhaseThenRestartConvergesWithOneReboot(t *testing.T) {
	t.Parallel()
	w := crashWorld(t, 1)
	n := w.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	kube := w.Kube.Client
	a := startCrashAgent(ctx, t, w, n)
	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })

	type kase struct {
		phase nodestatus.Phase
		// arm runs right after annotating (or before, see preArm) and may widen the window.
		preArm func()
		// until is the condition the kill waits for.
		until func(nodestatus.Status, bool) bool
		// afterKill runs after the kill, before the restart.
		afterKill func()
		// afterRestart runs once the new agent is started.
		afterRestart func(mark int)
		// beforeKill runs once until holds.
		beforeKill func()
		// afterDone checks more once the node is Done; logMark is where the restarted agent's
		// log begins, created the stand-in's "transaction created" lines before the restart.
		afterDone func(logMark, created int)
		// noRepull: the staged deployment already matched at the kill, no blob may be fetched again.
		noRepull bool
	}
	var stalled, started int
	cases := []kase{
		{
			phase: nodestatus.PhaseStaging,
			preArm: func() {
				if err := w.Registry.SetFault(registry.Fault{Effect: registry.Delay, Kind: registry.KindBlob, Latency: 1500 * time.Millisecond}); err != nil {
					t.Fatal(err)
				}
			},
			until: func(s nodestatus.Status, _ bool) bool { return s.Phase == nodestatus.PhaseStaging },
			// Mid-pull: the staging transaction started and the stand-in got at least one blob.
			beforeKill: func() {
				waitInLog(t, n, "transaction started", started+1, time.Minute)
				at := blobGETs(w, 0)
				waitFor(t, "a blob fetched by the staging transaction", time.Minute, func() bool { return blobGETs(w, 0) > at })
				t.Logf("mid-pull: %d blob GETs before the transaction started, %d now", at, blobGETs(w, 0))
			},
			afterKill: func() { w.Registry.ClearFaults() },
			afterDone: func(logMark, created int) {
				if !strings.Contains(a.logs.String()[logMark:], "re-attaching to the running transaction") {
					t.Errorf("the restarted agent did not re-attach to the running staging transaction")
				}
				var rebases []string
				for _, l := range strings.Split(readLog(t, n, n.Reboots()-1), "\n") {
					if strings.Contains(l, "transaction created") && strings.Contains(l, `"Rebase"`) {
						rebases = append(rebases, l)
					}
				}
				if len(rebases) > 1 {
					t.Errorf("%d staging transactions in the boot of the kill, want 1 (re-attached):\n%s", len(rebases), strings.Join(rebases, "\n"))
				}
				seen, dup := map[string]int{}, 0
				for _, d := range w.Registry.BlobsFetched() {
					seen[d.String()]++
					if seen[d.String()] == 2 {
						dup++
					}
				}
				t.Logf("blobs fetched more than once during this update: %d (verification by the agent fetches some too)", dup)
			},
		},
		{
			phase: nodestatus.PhaseDraining,
			until: func(s nodestatus.Status, unsched bool) bool {
				return s.Phase == nodestatus.PhaseDraining && unsched || s.Phase == nodestatus.PhaseRebooting || s.Phase == nodestatus.PhaseConfirming
			},
			noRepull: true,
		},
		{
			phase: nodestatus.PhaseRebooting,
			// The finalize transaction is held by the stall knob: armed once staging is over.
			until: func(s nodestatus.Status, _ bool) bool {
				return s.Phase == nodestatus.PhaseRebooting && countInLog(t, n, "transaction stalled") > stalled
			},
			afterRestart: func(mark int) {
				// Let the restarted agent ask for the finalize again (it joins the held one).
				deadline := time.Now().Add(time.Minute)
				for !strings.Contains(a.logs.String()[mark:], "finalizing the staged deployment") && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if !strings.Contains(a.logs.String()[mark:], "finalizing the staged deployment") {
					t.Logf("the restarted agent did not ask to finalize within a minute; releasing anyway")
				} else {
					t.Logf("the restarted agent finalizes again (same boot ID); releasing the held finalize")
				}
				knob(t, n, "release")
			},
			noRepull: true,
		},
		{
			phase:    nodestatus.PhaseConfirming,
			until:    func(s nodestatus.Status, _ bool) bool { return s.Phase == nodestatus.PhaseConfirming },
			noRepull: true,
		},
	}
	for i, c := range cases {
		ok := t.Run("SIGKILL_in_"+string(c.phase), func(t *testing.T) {
			img := crashImage(t, w, fmt.Sprintf("crash-%d", i), fmt.Sprintf("4.%d", i))
			reboots := n.Reboots()
			w.Registry.ResetAccessLog()
			if c.preArm != nil {
				c.preArm()
			}
			started = countInLog(t, n, "transaction started")
			began := time.Now()
			annotate(ctx, t, kube, n.Name, img.Ref)
			if c.phase == nodestatus.PhaseRebooting {
				waitNode(ctx, t, kube, n.Name, "Staged", func(s nodestatus.Status) bool {
					return s.Phase == nodestatus.PhaseStaged || s.Phase == nodestatus.PhaseWaitingForSlot || s.Phase == nodestatus.PhaseDraining
				})
				stalled = countInLog(t, n, "transaction stalled")
				knob(t, n, "stall")
			}
			var unsched bool
			phases := waitNode(ctx, t, kube, n.Name, string(c.phase), func(s nodestatus.Status) bool {
				if s.State == nodestatus.StateDone && s.DesiredDigest == img.Digest.String() {
					return true // too late: reported below
				}
				_, u := phaseNow(ctx, t, w, n.Name)
				unsched = u
				return c.until(s, u)
			})
			if c.beforeKill != nil {
				c.beforeKill()
			}
			a.kill()
			killedAt := time.Since(began)
			s, u := phaseNow(ctx, t, w, n.Name)
			mark := len(w.Registry.AccessLog())
			blobsBefore := blobGETs(w, 0)
			t.Logf("SIGKILL at +%v (watch: %s, unschedulable %v); Node after the kill: %s/%s unschedulable %v, reboots %d",
				killedAt.Round(time.Millisecond), strings.Join(phases, " → "), unsched, s.State, s.Phase, u, n.Reboots()-reboots)
			if s.State == nodestatus.StateDone {
				t.Fatalf("the update finished before the kill point %s was caught", c.phase)
			}
			if s.Phase != c.phase {
				t.Logf("NOTE: killed in %s, not in %s (the watch caught it late)", s.Phase, c.phase)
			}
			if c.afterKill != nil {
				c.afterKill()
			}
			logMark := len(a.logs.String())
			a.start()
			if c.afterRestart != nil {
				c.afterRestart(logMark)
			}
			after := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
				return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
			})
			t.Logf("after the restart: %s; total %v", strings.Join(after, " → "), time.Since(began).Round(time.Millisecond))
			refetched := blobGETs(w, mark)
			t.Logf("blob GETs: %d before the kill, %d after the restart", blobsBefore, refetched)
			if c.noRepull && refetched != 0 {
				t.Errorf("%d blobs fetched again after the restart although the staged deployment matched", refetched)
			}
			if strings.Contains(a.logs.String()[logMark:], "INFO\tstaging\t") && c.noRepull {
				t.Errorf("the restarted agent staged again")
			}
			if c.afterDone != nil {
				c.afterDone(logMark, 0)
			}
			checkDoneOn(ctx, t, w, n, img, reboots)
		})
		if !ok {
			// The node may be left mid-update: later cases would measure the wrong thing.
			t.Logf("stopping after the failed case %s", c.phase)
			return
		}
	}
}

// TestDesiredImageChangedMidStagingCancelsTheTransactionAndTheSecondImageWins changes
// desired-image while the staging transaction is held by the stall knob: the agent cancels it
// (the stand-in logs the Cancel and Finished(false, "Operation was cancelled")), stages the
// second image and the node ends Done on it after one reboot.
func TestDesiredImageChangedMidStagingCancelsTheTransactionAndTheSecondImageWins(t *testing.T) {
	t.Parallel()
	w := crashWorld(t, 1)
	n := w.Nodes[0]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kube := w.Kube.Client
	first, second := crashImage(t, w, "first", "5.1"), crashImage(t, w, "second", "5.2")
	a := startCrashAgent(ctx, t, w, n)
	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	reboots := n.Reboots()

	stalled := countInLog(t, n, "transaction stalled")
	knob(t, n, "stall")
	began := time.Now()
	annotate(ctx, t, kube, n.Name, first.Ref)
	waitInLog(t, n, "transaction stalled", stalled+1, 2*time.Minute)
	waitNode(ctx, t, kube, n.Name, "Staging", func(s nodestatus.Status) bool { return s.Phase == nodestatus.PhaseStaging })
	changed := time.Now()
	annotate(ctx, t, kube, n.Name, second.Ref)
	waitInLog(t, n, "transaction cancel requested", 1, time.Minute)
	waitInLog(t, n, "Operation was cancelled", 1, time.Minute)
	t.Logf("Cancel seen by the stand-in %v after the change; Finished(false, \"Operation was cancelled\") logged", time.Since(changed).Round(time.Millisecond))
	knob(t, n, "release")
	phases := waitNode(ctx, t, kube, n.Name, "Done on "+second.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == second.Pinned
	})
	t.Logf("Done after %v; phases since the change: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
	checkDoneOn(ctx, t, w, n, second, reboots)
	if !strings.Contains(a.logs.String(), "cancelling the running transaction") && !strings.Contains(a.logs.String(), "interrupting the running effect") {
		t.Errorf("the agent's log shows no cancellation")
	}
}

// TestDesiredImageChangedWhileWaitingForSlotCleansUpAndStagesTheNewImage holds the pool's only
// slot with another (Working) node, lets the agent stage an image and wait, then changes
// desired-image: the staged deployment is cleaned up, the slot is not taken, the new image is
// staged and waits. Freeing the slot then lets the node reach Done on the new image.
func TestDesiredImageChangedWhileWaitingForSlotCleansUpAndStagesTheNewImage(t *testing.T) {
	t.Parallel()
	w := crashWorld(t, 2)
	n, holder := w.Nodes[0], w.Nodes[1]
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kube := w.Kube.Client
	first, second := crashImage(t, w, "slot-first", "6.1"), crashImage(t, w, "slot-second", "6.2")

	// node-2 is mid-update (Working/Draining) and holds the slot: it may not be taken over.
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"Working",%q:"Draining"}}}`, nodestatus.AnnotationState, nodestatus.AnnotationPhase)
	if _, err := kube.CoreV1().Nodes().Patch(ctx, holder.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	now := metav1.NewMicroTime(time.Now())
	lease := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "layerd-slot-default-0", Namespace: harness.AgentNamespace,
			Labels: map[string]string{coord.LabelSlotPool: "default", coord.LabelSlotIndex: "0"}},
		Spec: coordv1.LeaseSpec{HolderIdentity: ptr.To(holder.Name), LeaseDurationSeconds: ptr.To[int32](300),
			AcquireTime: &now, RenewTime: &now},
	}
	if _, err := kube.CoordinationV1().Leases(harness.AgentNamespace).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating the held slot: %v", err)
	}

	a := startCrashAgent(ctx, t, w, n)
	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	reboots := n.Reboots()
	began := time.Now()
	annotate(ctx, t, kube, n.Name, first.Ref)
	phases := waitNode(ctx, t, kube, n.Name, "WaitingForSlot", func(s nodestatus.Status) bool { return s.Phase == nodestatus.PhaseWaitingForSlot })
	t.Logf("waiting for the slot after %v: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
	if st := status(t, connect(t, n)); digestOf(st.Staged) != first.Digest.String() {
		t.Fatalf("staged %s while waiting, want %s", digestOf(st.Staged), first.Digest)
	}
	var s nodestatus.Status
	deadline := time.Now().Add(10 * time.Second)
	for {
		s, _ = phaseNow(ctx, t, w, n.Name)
		if strings.Contains(s.Message, holder.Name) || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("WaitingForSlot message: %q", s.Message)
	if !strings.Contains(s.Message, holder.Name) {
		t.Errorf("the WaitingForSlot message does not name the holder %s after 10s: %q", holder.Name, s.Message)
	}
	cleanups := countInLog(t, n, "transaction created")
	logMark := len(a.logs.String())
	changed := time.Now()
	annotate(ctx, t, kube, n.Name, second.Ref)
	phases = waitNode(ctx, t, kube, n.Name, "WaitingForSlot with "+second.Pinned+" staged", func(s nodestatus.Status) bool {
		return s.Phase == nodestatus.PhaseWaitingForSlot && s.DesiredDigest == second.Digest.String() && s.StagedImage == second.Pinned
	})
	t.Logf("after the change (%v): %s", time.Since(changed).Round(time.Millisecond), strings.Join(phases, " → "))
	if !containsPhase(phases, string(nodestatus.PhaseResolving)) && !containsPhase(phases, string(nodestatus.PhaseStaging)) {
		t.Errorf("no new Resolving/Staging after the change: %v", phases)
	}
	st := status(t, connect(t, n))
	if digestOf(st.Staged) != second.Digest.String() {
		t.Errorf("staged %s, want %s", digestOf(st.Staged), second.Digest)
	}
	for _, d := range st.Deployments {
		if d.ContainerImageReferenceDigest == first.Digest.String() {
			t.Errorf("the first image's deployment %s is still there", d.ID)
		}
	}
	b, _ := os.ReadFile(standInLog(n))
	var txns []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, "transaction created") {
			txns = append(txns, l)
		}
	}
	if len(txns) > cleanups {
		txns = txns[cleanups:]
	}
	t.Logf("transactions after the change: %d", len(txns))
	cleaned := false
	for _, l := range txns {
		t.Logf("  %s", l)
		if strings.Contains(strings.ToLower(l), "cleanup") {
			cleaned = true
		}
	}
	if !cleaned {
		t.Errorf("no cleanup transaction after the change while WaitingForSlot")
	}
	if strings.Contains(a.logs.String()[logMark:], "holding a reboot slot") {
		t.Errorf("the agent claims a slot")
	}
	l, err := kube.CoordinationV1().Leases(harness.AgentNamespace).Get(ctx, lease.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(l.Spec.HolderIdentity, ""); h != holder.Name {
		t.Errorf("slot holder %q, want %s (not taken)", h, holder.Name)
	}
	s, unsched := phaseNow(ctx, t, w, n.Name)
	if unsched || s.CordonedBy != "" {
		t.Errorf("cordoned while waiting for the slot")
	}
	if n.Reboots() != reboots {
		t.Errorf("rebooted while waiting for the slot")
	}

	// Free the slot: the node takes it (slot poll) and ends Done on the second image.
	if err := kube.CoordinationV1().Leases(harness.AgentNamespace).Delete(ctx, lease.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	phases = waitNode(ctx, t, kube, n.Name, "Done on "+second.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == second.Pinned
	})
	t.Logf("Done %v after freeing the slot: %s", time.Since(freed).Round(time.Millisecond), strings.Join(phases, " → "))
	checkDoneOn(ctx, t, w, n, second, reboots)
}
