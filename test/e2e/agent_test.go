package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/kube"
	"layerd.dev/layerd/test/osimage"
)

// imageAgent is the image the agent test updates to: its own tag, so the rpm-ostree tests that
// run on the same node afterwards still find v2 and v3 new to it.
func imageAgent(t *testing.T, w *harness.World) *osimage.Image {
	return image(t, w, osimage.Spec{Repo: "fcos/os", Tag: "agent", Version: "2.1", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.1\n"},
		"etc/motd":       {Content: "Welcome to layerd test OS 2.1\n"},
	}}, true)
}

// syncBuffer is an io.Writer safe for the pod's output and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAgentUpdatesANodeAnnotatedWithASignedImage runs `layerd agent` on one node the way the
// DaemonSet runs it (its ServiceAccount's bound token, the node's /run and /host), annotates the
// Node and follows it to Done on the new digest, booted once; then an unsigned image is refused.
func TestAgentUpdatesANodeAnnotatedWithASignedImage(t *testing.T) {
	w := world(t)
	n := w.Nodes[1]
	img, unsigned := imageAgent(t, w), imageUnsigned(t, w)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	kube := w.Kube.Client

	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		t.Fatalf("agent kubeconfig: %v", err)
	}
	bin := layerdBinary(t)
	var logs syncBuffer
	runAgent := func(name string) (*harness.Pod, func() error) {
		tmpl := w.AgentPod(n, bin, kubeconfig, &logs)
		tmpl.Name = name
		pod, stop, err := n.RunPod(tmpl)
		if err != nil {
			t.Fatalf("starting the agent pod on %s: %v", n.Name, err)
		}
		return pod, stop
	}
	_, stop := runAgent("layerd-agent")
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the agent pod: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	// The agent reports Done on the booted base image before anything is asked of it.
	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	reboots, bootID := n.Reboots(), n.Kubelet.BootID()

	t.Run("a_signed_image_ends_Done_on_its_digest_after_one_reboot", func(t *testing.T) {
		auditMark := agentWrites(t, w, n.Name)
		began := time.Now()
		annotate(ctx, t, kube, n.Name, img.Ref)
		phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
		})
		t.Logf("Done after %v; phases: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
		if len(phases) > 1 {
			t.Logf("desired-image picked up (first change on the Node) at %s", phases[1])
		}
		writes := agentWrites(t, w, n.Name)[len(auditMark):]
		byKind := map[string]int{}
		for _, e := range writes {
			k := e.Verb
			if r := e.ObjectRef; r != nil {
				k += " " + r.Resource
				if r.Subresource != "" {
					k += "/" + r.Subresource
				}
			}
			byKind[k]++
		}
		t.Logf("API writes by the agent for this update (audit log): %d %v", len(writes), byKind)
		if got := n.Reboots() - reboots; got != 1 {
			t.Errorf("%d reboots counted by the harness, want 1", got)
		}
		if n.Kubelet.BootID() == bootID {
			t.Errorf("boot ID unchanged")
		}
		st := status(t, connect(t, n))
		if digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
			t.Errorf("rpm-ostree: booted %s, staged %v; want %s booted, nothing staged", digestOf(st.Booted), st.Staged, img.Digest)
		}
		booted, err := n.Booted()
		if err != nil || st.Booted == nil || booted.Checksum != st.Booted.Checksum {
			t.Errorf("the sysroot booted %+v (%v), rpm-ostree says %v", booted, err, st.Booted)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		if node.Spec.Unschedulable || s.CordonedBy != "" || s.DesiredDigest != img.Digest.String() {
			t.Errorf("after Done: unschedulable %v, cordoned-by %q, desired-digest %q", node.Spec.Unschedulable, s.CordonedBy, s.DesiredDigest)
		}
		scrape(ctx, t, logs.String(), map[string]string{
			`layerd_state{state="Done"}`: "1", `layerd_state{state="Working"}`: "0",
		})
		for _, want := range []string{"Resolving", "Verifying", "Staging", "Staged", "WaitingForSlot", "Draining", "Rebooting", "Confirming"} {
			if !containsPhase(phases, want) {
				t.Errorf("phase %s never observed in %v", want, phases)
			}
		}
	})

	t.Run("an_unsigned_image_ends_Degraded_SignatureRejected_with_nothing_staged", func(t *testing.T) {
		reboots := n.Reboots()
		annotate(ctx, t, kube, n.Name, unsigned.Ref)
		phases := waitNode(ctx, t, kube, n.Name, "Degraded SignatureRejected", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDegraded && s.Reason == reason.SignatureRejected
		})
		t.Logf("phases: %s", strings.Join(phases, " → "))
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		if s.Reason != reason.SignatureRejected {
			t.Errorf("reason %s (%q), want SignatureRejected", s.Reason, s.Message)
		}
		if node.Spec.Unschedulable || s.CordonedBy != "" || s.StagedImage != "" {
			t.Errorf("unschedulable %v, cordoned-by %q, staged-image %q after a refusal", node.Spec.Unschedulable, s.CordonedBy, s.StagedImage)
		}
		if st := status(t, connect(t, n)); st.Staged != nil {
			t.Errorf("staged %s after a refusal", st.Staged.ID)
		}
		if n.Reboots() != reboots {
			t.Errorf("rebooted after a refusal")
		}
		leases, err := kube.CoordinationV1().Leases(harness.AgentNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leases.Items {
			if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == n.Name {
				t.Errorf("slot %s held by %s after a refusal", l.Name, n.Name)
			}
		}
	})

	t.Run("SIGKILL_mid-transaction_then_restart_re-attaches_and_reboots_once", func(t *testing.T) {
		crashMidTransaction(ctx, t, w, n, &logs, "layerd-agent", &stop, runAgent)
	})
}

// crashMidTransaction: the agent is SIGKILLed while its staging transaction runs (held by the
// stand-in's stall knob); the restarted agent re-attaches to that transaction instead of staging
// again, and the node reaches Done with one reboot.
func crashMidTransaction(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, logs *syncBuffer,
	podName string, stop *func() error, restart func(string) (*harness.Pod, func() error)) {
	kube := w.Kube.Client
	img := image(t, w, osimage.Spec{Repo: "fcos/os", Tag: "agent-crash", Version: "2.2", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.2\n"},
	}}, true)
	reboots := n.Reboots()
	stalled := countInLog(t, n, "transaction stalled")
	knob(t, n, "stall")
	annotate(ctx, t, kube, n.Name, img.Ref)
	waitInLog(t, n, "transaction stalled", stalled+1, 2*time.Minute)
	waitNode(ctx, t, kube, n.Name, "Staging", func(s nodestatus.Status) bool { return s.Phase == nodestatus.PhaseStaging })
	// The pod's process changes at every reboot: kill the current one.
	pod := n.Pod(podName)
	if pod == nil {
		t.Fatalf("no pod %s on %s", podName, n.Name)
	}
	if err := pod.Kill(); err != nil {
		t.Fatalf("killing the agent: %v", err)
	}
	if err := (*stop)(); err != nil {
		t.Logf("stopping the killed pod: %v", err)
	}
	*stop = func() error { return nil }
	mark := len(logs.String())
	_, *stop = restart("layerd-agent-restarted")
	waitFor(t, "the restarted agent re-attaches", time.Minute, func() bool {
		return strings.Contains(logs.String()[mark:], "re-attaching to the running transaction")
	})
	knob(t, n, "release")
	phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	t.Logf("after the restart: %s", strings.Join(phases, " → "))
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots, want 1", got)
	}
	if after := logs.String()[mark:]; strings.Contains(after, "INFO\tstaging\t") {
		t.Errorf("the restarted agent staged again instead of re-attaching")
	}
	if st := status(t, connect(t, n)); digestOf(st.Booted) != img.Digest.String() {
		t.Errorf("booted %s, want %s", digestOf(st.Booted), img.Digest)
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// agentWrites are the API writes made so far with a token bound to node (the agent's), from the
// apiserver's audit log, in log order.
func agentWrites(t *testing.T, w *harness.World, node string) []kube.AuditEvent {
	t.Helper()
	evs, err := w.Kube.AuditEvents()
	if err != nil {
		t.Fatalf("reading the audit log: %v", err)
	}
	var out []kube.AuditEvent
	for _, e := range evs {
		if e.IsWrite() && e.NodeName() == node {
			out = append(out, e)
		}
	}
	return out
}

func containsPhase(phases []string, p string) bool {
	for _, x := range phases {
		if strings.Contains(x, "/"+p+" ") {
			return true
		}
	}
	return false
}

func annotate(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, desired string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, nodestatus.AnnotationDesiredImage, desired)
	if _, err := kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("annotating %s: %v", node, err)
	}
}

// waitNode watches the Node until cond holds and returns the state/phase values seen on the way,
// each with the time since the wait began ("Working/Staging +1.23s").
func waitNode(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, what string, cond func(nodestatus.Status) bool) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	var seen []string
	var last nodestatus.Status
	lastV, began := "", time.Now()
	note := func(n *corev1.Node) bool {
		s := nodestatus.Read(n)
		last = s
		v := string(s.State) + "/" + string(s.Phase)
		if s.Reason != "" {
			v += "(" + string(s.Reason) + ")"
		}
		if v != lastV {
			lastV = v
			seen = append(seen, fmt.Sprintf("%s +%.2fs", v, time.Since(began).Seconds()))
		}
		return cond(s)
	}
	sel := fields.OneTermEqualSelector("metadata.name", node).String()
	for {
		list, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{FieldSelector: sel})
		if err == nil && len(list.Items) == 1 && note(&list.Items[0]) {
			return seen
		}
		rv := ""
		if err == nil {
			rv = list.ResourceVersion
		}
		wi, err := kube.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{FieldSelector: sel, ResourceVersion: rv})
		if err != nil {
			if ctx.Err() != nil {
				t.Fatalf("waiting for %s on %s: %v; last %+v; seen %v", what, node, err, last, seen)
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			if n, ok := ev.Object.(*corev1.Node); ok && note(n) {
				wi.Stop()
				return seen
			}
		}
		wi.Stop()
		if ctx.Err() != nil {
			t.Fatalf("waiting for %s on %s: %v; last %+v; seen %v", what, node, ctx.Err(), last, seen)
		}
	}
}

// servingAddr is the last address the agent's log says it serves metrics and health on (the
// pod restarts after each reboot, so the last start counts).
var servingAddr = regexp.MustCompile(`serving metrics and health.*"addr": "([0-9.:]+)"`)

// scrape reads /healthz and /metrics of the running agent and checks the series in want.
func scrape(ctx context.Context, t *testing.T, logs string, want map[string]string) {
	t.Helper()
	m := servingAddr.FindAllStringSubmatch(logs, -1)
	if len(m) == 0 {
		t.Errorf("the agent's log names no metrics address")
		return
	}
	base := "http://" + m[len(m)-1][1]
	get := func(path string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("GET %s: %v", path, err)
			return 0, ""
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Errorf("reading %s: %v", path, err)
		}
		return resp.StatusCode, string(b)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if code, body := get(p); code != http.StatusOK {
			t.Errorf("GET %s: %d %s", p, code, body)
		}
	}
	_, body := get("/metrics")
	for series, v := range want {
		found := false
		for _, line := range strings.Split(body, "\n") {
			if rest, ok := strings.CutPrefix(line, series+" "); ok {
				found = true
				if rest != v {
					t.Errorf("%s = %s, want %s", series, rest, v)
				}
			}
		}
		if !found {
			t.Errorf("%s not in /metrics", series)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "layerd_info") {
			t.Logf("metrics: %s", line)
		}
	}
}
