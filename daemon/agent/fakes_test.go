package agent_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/clock"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/daemon/agent"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/metrics"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
)

const (
	nodeName  = "node-1"
	namespace = "layerd-system"
	repo      = "registry.test/fcos/os"
	baseDig   = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	v2Dig     = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
	v3Dig     = "sha256:3333333333333333333333333333333333333333333333333333333333333333"
)

// fakeHost is rpm-ostree in memory: deployments by digest, an optional running transaction,
// and a reboot that FinalizeDeployment triggers through onFinalize.
type fakeHost struct {
	mu         sync.Mutex
	booted     string // digest
	staged     string
	activeTxn  string
	calls      []string
	stageBlock func(ctx context.Context) error // runs inside StageImage when set
	onFinalize func(digest string)
	// finalizeErr fails the next FinalizeDeployment (then it is cleared).
	finalizeErr error
	// bootOld makes FinalizeDeployment reboot into the old deployment (finalization failed at
	// shutdown, as ostree-finalize-staged.service would).
	bootOld bool
	// drivers are the register-driver values of the StageImage calls.
	drivers []string
}

var _ agent.Host = (*fakeHost)(nil)

func deployment(dig string, booted, staged bool) *rpmostree.Deployment {
	return &rpmostree.Deployment{ID: "fcos-" + dig[7:15] + ".0", OSName: "fcos", Checksum: dig[7:],
		Booted: booted, Staged: staged, ContainerImageReference: "ostree-unverified-registry:" + repo + "@" + dig,
		ContainerImageReferenceDigest: dig}
}

func (h *fakeHost) record(c string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, c)
}

func (h *fakeHost) Calls() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.calls...)
}

func (h *fakeHost) Status(context.Context) (*rpmostree.Status, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := &rpmostree.Status{OSName: "fcos", Booted: deployment(h.booted, true, false), ActiveTransactionPath: h.activeTxn}
	if h.staged != "" {
		st.Staged = deployment(h.staged, false, true)
	}
	return st, nil
}

func (h *fakeHost) StageImage(ctx context.Context, pinned string, opts rpmostree.RebaseOptions) (*rpmostree.StageResult, error) {
	h.record("StageImage " + pinned)
	h.mu.Lock()
	h.drivers = append(h.drivers, opts.RegisterDriver)
	h.mu.Unlock()
	if !opts.LockFinalization {
		return nil, errors.New("staged without lock-finalization")
	}
	h.mu.Lock()
	block := h.stageBlock
	h.mu.Unlock()
	if block != nil {
		if err := block(ctx); err != nil {
			return nil, err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.staged = rpmostree.DigestOf(pinned)
	return &rpmostree.StageResult{Deployment: deployment(h.staged, false, true), Started: true}, nil
}

func (h *fakeHost) Drivers() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.drivers...)
}

func (h *fakeHost) Attach(ctx context.Context, address string, _ rpmostree.ProgressFunc) error {
	h.record("Attach " + address)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.activeTxn = ""
	return nil
}

func (h *fakeHost) Cleanup(_ context.Context, elements []string, _ rpmostree.CleanupOptions) error {
	h.record(fmt.Sprintf("Cleanup %v", elements))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.staged = ""
	return nil
}

func (h *fakeHost) FinalizeDeployment(_ context.Context, checksum string, _ rpmostree.FinalizeOptions) error {
	h.record("FinalizeDeployment " + checksum)
	h.mu.Lock()
	if err := h.finalizeErr; err != nil {
		h.finalizeErr = nil
		h.mu.Unlock()
		return err
	}
	if h.staged != checksum {
		h.mu.Unlock()
		return fmt.Errorf("finalize %s: staged is %q", checksum, h.staged)
	}
	if !h.bootOld {
		h.booted = h.staged
	}
	h.staged = ""
	cb := h.onFinalize
	h.mu.Unlock()
	if cb != nil {
		go cb(checksum)
	}
	return nil
}

// fakeFinalizeLog answers PreviousBootFinalizeError with msg and counts the reads.
type fakeFinalizeLog struct {
	mu    sync.Mutex
	msg   string
	reads int
}

func (l *fakeFinalizeLog) PreviousBootFinalizeError(context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reads++
	return l.msg, nil
}

func (l *fakeFinalizeLog) Reads() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reads
}

type fakeDisk struct{ free uint64 }

func (d fakeDisk) Free(context.Context) (uint64, error) { return d.free, nil }

// fixture is one node's agent over a fake clientset, with the real nodestatus writer and
// coord slots on that clientset and fakes for the rest.
type fixture struct {
	t        *testing.T
	kube     *fake.Clientset
	host     *fakeHost
	images   *image.Fake
	drainer  *drain.Fake
	metrics  *metrics.Metrics
	inhib    *systemd.FakeInhibitors
	updaters *updaters.Fake
	finalize *fakeFinalizeLog
	notifier *fakeNotifier
	agent    *agent.Agent
	stop     context.CancelFunc
	done     chan error
	bootN    int
	// root is the host root hostfs works on: sysroot/ with a deployment directory per digest
	// (deploymentDir), and the live etc/ and var/; run/ holds the report file.
	root   string
	report string
}

func readyNode(desired string) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Annotations: map[string]string{}}}
	if desired != "" {
		n.Annotations[nodestatus.AnnotationDesiredImage] = desired
	}
	n.Status.NodeInfo.BootID = "boot-1"
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}}
	return n
}

// resolver resolves tags v2 and v3 of repo; anything else is not found.
func resolver(_ context.Context, ref string) (*image.Resolved, error) {
	digs := map[string]string{repo + ":v2": v2Dig, repo + ":v3": v3Dig, repo + ":base": baseDig,
		repo + "@" + v2Dig: v2Dig, repo + "@" + v3Dig: v3Dig}
	d, ok := digs[ref]
	if !ok {
		return nil, &image.Error{Code: "ImageNotFound", Image: ref, Err: errors.New("manifest unknown")}
	}
	return &image.Resolved{Input: ref, Name: ref, Repo: repo, Pinned: repo + "@" + d, ManifestDigest: digestOf(d)}, nil
}

func newFixture(t *testing.T, node *corev1.Node, host *fakeHost) *fixture {
	t.Helper()
	return newFixtureWithClock(t, node, host, clock.RealClock{})
}

func newFixtureWithClock(t *testing.T, node *corev1.Node, host *fakeHost, clk clock.Clock) *fixture {
	t.Helper()
	f := &fixture{t: t, kube: fake.NewClientset(node), host: host, images: &image.Fake{ResolveFunc: resolver},
		drainer: drain.NewFake(false), metrics: metrics.New(nodeName), inhib: &systemd.FakeInhibitors{}, notifier: &fakeNotifier{}, bootN: 1,
		updaters: &updaters.Fake{}, finalize: &fakeFinalizeLog{},
		root: t.TempDir()}
	f.report = filepath.Join(f.root, "run", "layerd", "report.json")
	for _, d := range []struct{ dig, level string }{{baseDig, "1"}, {v2Dig, "2"}, {v3Dig, "1"}} {
		f.write(filepath.Join(f.deploymentDir(d.dig), "usr/etc/app.conf"), "level="+d.level+"\n")
		f.mkdir(filepath.Join(f.deploymentDir(d.dig), "var"))
	}
	f.write(filepath.Join(f.root, "etc/app.conf"), "level=1\n")
	f.mkdir(filepath.Join(f.root, "var/lib"))
	f.mkdir(filepath.Join(f.root, "var/log"))
	log := zaptest.NewLogger(t)
	hfs, err := hostfs.New(hostfs.Options{HostRoot: f.root, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	w, err := nodestatus.New(f.kube, nodeName, clk, log, nodestatus.WithEventNamespace(namespace))
	if err != nil {
		t.Fatal(err)
	}
	slots, err := coord.New(f.kube, namespace, clk, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg := daemon.DefaultConfig(func() float64 { return 0.5 })
	cfg.SettleTime, cfg.SlotPoll, cfg.RebootWait = 0, 50*time.Millisecond, 50*time.Millisecond
	cfg.RetryBackoff = daemon.Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond}
	m, err := daemon.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	health, err := metrics.NewHealth(time.Minute, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	f.agent, err = agent.New(agent.Deps{
		Kube: f.kube, Machine: m, Status: w, Slots: slots, Drainer: f.drainer, Images: f.images, Host: host,
		Disk: fakeDisk{free: 1 << 40}, HostFS: hfs, Updaters: f.updaters, Finalize: f.finalize, Inhibitors: f.inhib, Metrics: f.metrics, Health: health,
		Notifier: f.notifier, Clock: clk, Log: log,
	}, agent.Config{NodeName: nodeName, RetryInterval: 20 * time.Millisecond, ReportPath: f.report, RegisterDriver: true})
	if err != nil {
		t.Fatal(err)
	}
	host.onFinalize = func(string) { f.reboot() }
	return f
}

// deploymentDir is the deployment directory of dig in the fixture's sysroot, as fakeHost
// reports it (stateroot fcos, checksum = the digest's hex, serial 0).
func (f *fixture) deploymentDir(dig string) string {
	return filepath.Join(f.root, "sysroot/ostree/deploy/fcos/deploy", dig[7:]+".0")
}

func (f *fixture) write(path, content string) {
	f.t.Helper()
	f.mkdir(filepath.Dir(path))
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mkdir(path string) {
	f.t.Helper()
	if err := os.MkdirAll(path, 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) read(path string) string {
	f.t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		f.t.Fatal(err)
	}
	return string(b)
}

// poolPolicy writes the layerd-config ConfigMap with pools.yaml (call before start).
func (f *fixture) poolPolicy(poolsYAML string) {
	f.t.Helper()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: coord.ConfigMapName, Namespace: namespace},
		Data: map[string]string{coord.ConfigKeyPools: poolsYAML}}
	if _, err := f.kube.CoreV1().ConfigMaps(namespace).Create(context.Background(), cm, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// events returns the node's Events as "Reason: message".
func (f *fixture) events() []string {
	f.t.Helper()
	l, err := f.kube.CoreV1().Events(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, e := range l.Items {
		out = append(out, e.Reason+": "+e.Message)
	}
	return out
}

// messages returns every layerd.dev/message the agent patched onto the Node, in order.
func (f *fixture) messages() []string {
	var out []string
	for _, a := range f.kube.Actions() {
		p, ok := a.(k8stesting.PatchAction)
		if !ok || a.GetResource().Resource != "nodes" {
			continue
		}
		var doc struct {
			Metadata struct {
				Annotations map[string]*string `json:"annotations"`
			} `json:"metadata"`
		}
		if json.Unmarshal(p.GetPatch(), &doc) != nil {
			continue
		}
		if m := doc.Metadata.Annotations[nodestatus.AnnotationMessage]; m != nil {
			out = append(out, *m)
		}
	}
	return out
}

// reboot gives the Node a new boot ID, as the kubelet reports after the host rebooted.
func (f *fixture) reboot() {
	ctx := context.Background()
	n, err := f.kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
	if err != nil {
		f.t.Errorf("reboot: %v", err)
		return
	}
	f.bootN++
	n.Status.NodeInfo.BootID = fmt.Sprintf("boot-%d", f.bootN)
	if _, err := f.kube.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		f.t.Errorf("reboot: %v", err)
	}
}

func (f *fixture) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.done = cancel, make(chan error, 1)
	go func() { f.done <- f.agent.Run(ctx) }()
	f.t.Cleanup(f.shutdown)
}

func (f *fixture) shutdown() {
	if f.stop == nil {
		return
	}
	f.stop()
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		f.t.Errorf("Run did not return after its context ended")
	}
	f.stop = nil
}

func (f *fixture) node() *corev1.Node {
	n, err := f.kube.CoreV1().Nodes().Get(context.Background(), nodeName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

func (f *fixture) annotate(key, value string) {
	f.t.Helper()
	n := f.node()
	if value == "" {
		delete(n.Annotations, key)
	} else {
		n.Annotations[key] = value
	}
	if _, err := f.kube.CoreV1().Nodes().Update(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// waitFor polls the Node until cond holds.
func (f *fixture) waitFor(what string, cond func(nodestatus.Status) bool) nodestatus.Status {
	f.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := nodestatus.Read(f.node())
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("waiting for %s: node is %+v; host calls %v", what, st, f.host.Calls())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (f *fixture) leases() int {
	l, err := f.kube.CoordinationV1().Leases(namespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	return len(l.Items)
}

// inhibited makes a block inhibitor on shutdown held (call before start).
func (f *fixture) inhibited() {
	f.inhib.List = []systemd.Inhibitor{{Who: "backup", Why: "nightly backup", What: "shutdown", Mode: "block"}}
}

// scrape returns the agent's /metrics.
func (f *fixture) scrape() string {
	rec := httptest.NewRecorder()
	f.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// nodeLists counts the LIST requests for Nodes made so far.
func (f *fixture) nodeLists() int {
	n := 0
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == "list" && a.GetResource().Resource == "nodes" {
			n++
		}
	}
	return n
}

// holdSlot makes node hold the pool's only slot, renewed just now.
func (f *fixture) holdSlot(node string) {
	f.t.Helper()
	now := metav1.NewMicroTime(time.Now())
	holder, dur := node, int32(300)
	l := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: coord.LeaseName(nodestatus.DefaultPool, 0), Namespace: namespace,
			Labels: map[string]string{coord.LabelSlotPool: nodestatus.DefaultPool, coord.LabelSlotIndex: "0"}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
	}
	if _, err := f.kube.CoordinationV1().Leases(namespace).Create(context.Background(), l, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// slotHolder is the holder of the pool's first slot ("" when free or missing).
func (f *fixture) slotHolder() string {
	l, err := f.kube.CoordinationV1().Leases(namespace).Get(context.Background(), coord.LeaseName(nodestatus.DefaultPool, 0), metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// fakeNotifier records sd_notify STATUS lines.
type fakeNotifier struct {
	mu    sync.Mutex
	lines []string
}

var _ agent.Notifier = (*fakeNotifier)(nil)

func (n *fakeNotifier) Status(line string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.lines = append(n.lines, line)
	return nil
}

func (n *fakeNotifier) Lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.lines...)
}
