package e2e_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// agentExitKey holds, in a context made by agentContext, the function that cancels it when an
// agent pod exits on its own.
type agentExitKey struct{}

// agentContext is the context of a test that runs agents with startAgentPod: it ends after
// timeout, or at once when one of the test's agents exits on its own (its log is printed and
// the test marked failed), so a wait such as waitNode fails then instead of at its timeout.
// It is canceled when the test ends.
func agentContext(t *testing.T, timeout time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	ctx, exited := context.WithCancelCause(ctx)
	return context.WithValue(ctx, agentExitKey{}, exited)
}

// agentPod is `layerd agent` run on a node as its DaemonSet pod, with extra flags.
type agentPod struct {
	n    *harness.Node
	name string
	logs *syncBuffer
	stop func() error

	quit     chan struct{} // closed when the test stops or kills the agent on purpose
	quitOnce sync.Once
	watched  chan struct{} // closed when the exit watcher returned
	exitLog  bool          // the watcher printed the log of an agent that exited (read after watched)
}

// startAgentPod runs the agent on n with the flags every e2e agent gets plus extra; the pod is
// stopped when the test ends, and its log printed if the test failed. An agent that exits on its
// own (not stopped by a reboot of its node, nor by the test) fails the test at once with its
// log; with a ctx from agentContext, ctx is canceled too, ending the test's waits.
func startAgentPod(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, extra ...string) *agentPod {
	t.Helper()
	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		t.Fatalf("agent kubeconfig of %s: %v", n.Name, err)
	}
	a := &agentPod{n: n, name: "layerd-agent", logs: &syncBuffer{}, quit: make(chan struct{}), watched: make(chan struct{})}
	pod, stop, err := n.RunPod(w.AgentPod(n, layerdBinary(t), kubeconfig, a.logs, extra...))
	if err != nil {
		t.Fatalf("starting the agent pod on %s: %v", n.Name, err)
	}
	a.stop = stop
	exited, _ := ctx.Value(agentExitKey{}).(context.CancelCauseFunc)
	go a.watch(t, pod, exited)
	t.Cleanup(func() {
		a.endWatch()
		if err := a.stop(); err != nil {
			t.Logf("stopping the agent pod on %s: %v", n.Name, err)
		}
		if t.Failed() && !a.exitLog {
			t.Logf("agent log of %s:\n%s", n.Name, a.logs.String())
		}
	})
	return a
}

// watch follows the agent's pod across reboots of its node (the harness stops the pod at
// shutdown and starts a new one after boot) until the test ends the watch; a pod that exits
// without being stopped fails the test and calls exited (when not nil).
func (a *agentPod) watch(t *testing.T, p *harness.Pod, exited context.CancelCauseFunc) {
	defer close(a.watched)
	for {
		select {
		case <-a.quit:
			return
		case <-p.Done():
		}
		if !p.Stopped() {
			err := p.Wait(context.Background())
			if err == nil {
				err = fmt.Errorf("exit status 0")
			}
			t.Errorf("the agent on %s exited on its own (%v); its log:\n%s", a.n.Name, err, a.logs.String())
			a.exitLog = true
			if exited != nil {
				exited(fmt.Errorf("the agent on %s exited: %w", a.n.Name, err))
			}
			return
		}
		for { // stopped by a reboot: wait for the pod of the next boot
			select {
			case <-a.quit:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if cur := a.n.Pod(a.name); cur != nil && cur != p {
				p = cur
				break
			}
		}
	}
}

// endWatch stops watching the agent's pod for exits (the test is about to stop or kill it).
func (a *agentPod) endWatch() {
	a.quitOnce.Do(func() { close(a.quit) })
	<-a.watched
}

// kill SIGKILLs the agent (the node is gone as far as its agent is concerned) and removes the pod.
func (a *agentPod) kill(t *testing.T) {
	t.Helper()
	a.endWatch()
	pod := a.n.Pod(a.name)
	if pod == nil {
		t.Fatalf("no agent pod on %s", a.n.Name)
	}
	if err := pod.Kill(); err != nil {
		t.Fatalf("killing the agent on %s: %v", a.n.Name, err)
	}
	if err := a.stop(); err != nil {
		t.Logf("removing the killed agent pod: %v", err)
	}
	a.stop = func() error { return nil }
}

// setPools replaces pools.yaml of the layerd-config ConfigMap the packaging installed.
func setPools(ctx context.Context, t *testing.T, kube kubernetes.Interface, doc string) {
	t.Helper()
	cms := kube.CoreV1().ConfigMaps(harness.AgentNamespace)
	cm, err := cms.Get(ctx, coord.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("reading %s: %v", coord.ConfigMapName, err)
	}
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[coord.ConfigKeyPools] = doc
	if cfg, err := coord.ParseConfig(cm); err != nil || cfg.Err() != nil {
		if err == nil {
			err = cfg.Err()
		}
		t.Fatalf("the test's pools.yaml: %v", err)
	}
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("updating %s: %v", coord.ConfigMapName, err)
	}
}

// startAgentUp starts the agent on n (startAgentPod) and waits until it reports the node Done,
// so what the test does next is seen by a running agent.
func startAgentUp(ctx context.Context, t *testing.T, w *harness.World, n *harness.Node, extra ...string) *agentPod {
	t.Helper()
	a := startAgentPod(ctx, t, w, n, extra...)
	waitNode(ctx, t, w.Kube.Client, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	return a
}

// annotateUntilDegraded sets desired-image on node, waits for Degraded and fails the test unless
// the reason is want. It returns the Node's status and the states and phases seen on the way.
func annotateUntilDegraded(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, desired string, want reason.Code) (nodestatus.Status, []string) {
	t.Helper()
	began := time.Now()
	annotate(ctx, t, kube, node, desired)
	phases := waitNode(ctx, t, kube, node, "Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
	t.Logf("Degraded after %v; phases: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
	n, err := kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s := nodestatus.Read(n)
	t.Logf("message: %s", s.Message)
	if s.Reason != want {
		t.Fatalf("reason %s (%q), want %s", s.Reason, s.Message, want)
	}
	return s, phases
}

// retryUntilDoneOnce sets layerd.dev/retry to value and checks the update then ends Done on img
// with exactly one reboot since reboots, img booted and nothing staged.
func retryUntilDoneOnce(ctx context.Context, t *testing.T, kube kubernetes.Interface, n *harness.Node, img *osimage.Image, value string, reboots int) {
	t.Helper()
	began := time.Now()
	setRetry(ctx, t, kube, n.Name, value)
	phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	t.Logf("Done after %v; phases: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
	waitReboots(t, n, reboots+1, 30*time.Second)
	time.Sleep(time.Second) // a second reboot would show by now
	if got := n.Reboots() - reboots; got != 1 {
		t.Errorf("%d reboots, want exactly 1", got)
	}
	if st := status(t, connect(t, n)); digestOf(st.Booted) != img.Digest.String() || st.Staged != nil {
		t.Errorf("rpm-ostree booted %s, staged %v; want %s booted, nothing staged", digestOf(st.Booted), st.Staged, img.Digest)
	}
}
