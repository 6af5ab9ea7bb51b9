// Command demo is `make demo`: layerd's main job end to end on the node-in-a-box.
//
// It brings up three nodes (pool default, maxUnavailable 1), builds the agent, builds, pushes
// and signs a layered image on the box's signed base, runs one agent per node the way the
// DaemonSet runs it, annotates every node, shows each transition live, then prints a per-node
// timeline, the reboots the harness counted and where the logs are. Finally it shows a refusal:
// an unsigned image annotated on one node ends Degraded SignatureRejected with nothing staged.
//
// It exits non-zero unless the apiserver and every node's sysroot both show every node booted
// into the new digest, each node rebooted exactly once and no two nodes were ever Draining or
// Rebooting at the same time. Everything is torn down on every path, Ctrl-C included; the logs
// are kept in the directory it names.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

const nodes = 3

// The update the demo rolls out: a new tool and a changed /etc default.
var layered = osimage.Spec{Repo: "fcos/os", Tag: "v2", Version: "2.0", Files: map[string]osimage.File{
	"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.0\n"},
	"etc/motd":       {Content: "Welcome to layerd demo OS 2.0, now with mytool\n"},
}}

// unsignedSpec is the image nobody signed.
var unsignedSpec = osimage.Spec{Repo: "fcos/os", Tag: "v2-unsigned", Version: "2.0-unsigned", Files: map[string]osimage.File{
	"usr/bin/unsigned-tool": {Mode: 0o755, Content: "#!/bin/sh\necho nobody signed me\n"},
}}

// podSystemBus is DBUS_SYSTEM_BUS_ADDRESS inside a pod (the node's /run is the pod's /run).
const podSystemBus = "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket"

func main() {
	began := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	var interrupted atomic.Bool
	go func() {
		s := <-sigs
		interrupted.Store(true)
		out.printf("\n%s: stopping, tearing the node-in-a-box down (this takes a few seconds)…", s)
		cancel()
		for range sigs { // keep catching signals until the teardown is done
			out.printf("still tearing down…")
		}
	}()
	d := &demo{}
	err := d.run(ctx)
	if cerr := d.teardown(); cerr != nil {
		err = errors.Join(err, cerr)
	}
	cancel()
	out.printf("")
	if d.logs != "" {
		out.printf("Logs are kept in %s", d.logs)
	}
	if interrupted.Load() {
		out.printf("DEMO INTERRUPTED after %v (everything it started is stopped)", time.Since(began).Round(time.Second))
		os.Exit(130)
	}
	if err != nil {
		out.printf("DEMO FAILED after %v:\n  %s", time.Since(began).Round(time.Second), strings.ReplaceAll(err.Error(), "\n", "\n  "))
		os.Exit(1)
	}
	out.printf("DEMO PASSED in %v", time.Since(began).Round(time.Second))
}

// printer serializes output lines of the goroutines.
type printer struct{ mu sync.Mutex }

var out printer

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Printf(format+"\n", args...)
}

type demo struct {
	dir   string // the demo's directory: box/ (removed at the end) and logs/ (kept)
	logs  string
	w     *harness.World
	files []*os.File
	// agentLog is each node's agent pod stdout+stderr.
	agentLog map[string]string
}

func (d *demo) teardown() error {
	if d.w == nil {
		if d.dir != "" {
			_ = os.RemoveAll(filepath.Join(d.dir, "bin"))
		}
		return d.closeFiles()
	}
	out.printf("")
	out.printf("Tearing down the node-in-a-box…")
	d.copyStandInLogs()
	var errs []error
	if err := d.w.Close(); err != nil {
		errs = append(errs, fmt.Errorf("stopping the node-in-a-box: %w", err))
	}
	errs = append(errs, d.closeFiles())
	for _, sub := range []string{"box", "bin"} {
		if err := os.RemoveAll(filepath.Join(d.dir, sub)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *demo) closeFiles() error {
	var errs []error
	for _, f := range d.files {
		errs = append(errs, f.Close())
	}
	d.files = nil
	return errors.Join(errs...)
}

// copyStandInLogs keeps the rpm-ostreed stand-in logs (one per boot) of every node.
func (d *demo) copyStandInLogs() {
	for _, n := range d.w.Nodes {
		files, _ := filepath.Glob(filepath.Join(n.Dir, "rpmostreed.*.log"))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			_ = os.WriteFile(filepath.Join(d.logs, n.Name, filepath.Base(f)), b, 0o644)
		}
	}
}

func (d *demo) create(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	d.files = append(d.files, f)
	return f, nil
}

func step(format string, args ...any) func() {
	began := time.Now()
	msg := fmt.Sprintf(format, args...)
	out.printf("• %s…", msg)
	return func() { out.printf("  done in %v", time.Since(began).Round(100*time.Millisecond)) }
}

func (d *demo) run(ctx context.Context) error {
	if os.Getenv("LAYERD_K8S_BIN") == "" {
		return errors.New("LAYERD_K8S_BIN is not set: run `make demo` (or export LAYERD_K8S_BIN=$(hack/deps.sh))")
	}
	var err error
	if d.dir, err = os.MkdirTemp("", "layerd-demo-"); err != nil {
		return err
	}
	d.logs = filepath.Join(d.dir, "logs")
	boxFile, err := d.create(filepath.Join(d.logs, "box.log"))
	if err != nil {
		return err
	}
	boxLog := &lineWriter{w: boxFile}

	// The agent binary builds while the box comes up.
	type built struct {
		path string
		err  error
	}
	bin := make(chan built, 1)
	go func() {
		p, err := buildAgent(ctx, filepath.Join(d.dir, "bin"))
		bin <- built{p, err}
	}()

	done := step("Starting the node-in-a-box: %d nodes in pool %q (maxUnavailable 1, the default)", nodes, nodestatus.DefaultPool)
	startCtx, cancelStart := context.WithTimeout(ctx, 5*time.Minute)
	d.w, err = harness.New(startCtx, harness.Options{Nodes: nodes, Dir: filepath.Join(d.dir, "box"), Log: boxLog})
	cancelStart()
	if err != nil {
		d.w = nil // New stopped what it started
		_ = os.RemoveAll(filepath.Join(d.dir, "box"))
		return fmt.Errorf("starting the node-in-a-box: %w", err)
	}
	done()
	w := d.w
	out.printf("  apiserver %s, registry %s", w.Kube.Host, w.Registry.Addr())
	out.printf("  signed base image %s", w.Base.Pinned)

	done = step("Building the agent (go build ./cmd/layerd)")
	b := <-bin
	if b.err != nil {
		return b.err
	}
	done()

	done = step("Building, pushing and signing the update: %s:%s adds /usr/bin/mytool and changes the /etc/motd default", layered.Repo, layered.Tag)
	img, err := w.Images.Layered(ctx, w.Base, layered)
	if err != nil {
		return fmt.Errorf("building %s: %w", layered.Tag, err)
	}
	if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
		return fmt.Errorf("signing %s: %w", img.Pinned, err)
	}
	done()
	out.printf("  %s = %s", img.Ref, img.Digest)

	done = step("Starting one layerd agent per node, as the DaemonSet does (its ServiceAccount's node-bound token)")
	d.agentLog = map[string]string{}
	for _, n := range w.Nodes {
		if err := d.startAgent(ctx, n, b.path); err != nil {
			return err
		}
	}
	kube := w.Kube.Client
	if err := waitAll(ctx, kube, time.Minute, "every agent reports Done on the base image", func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone
	}); err != nil {
		return err
	}
	done()

	// The rollout.
	watcher := newWatcher(w.Registry.Addr())
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- watcher.run(wctx, kube) }()
	if err := watcher.synced(ctx); err != nil {
		stopWatch()
		return err
	}
	auditMark := d.auditCount()
	out.printf("")
	out.printf("Annotating all %d nodes with %s=%s", nodes, nodestatus.AnnotationDesiredImage, img.Ref)
	out.printf("%-12s %-7s %-8s %-9s %-15s %s", "TIME", "+T", "NODE", "STATE", "PHASE", "REASON / MESSAGE")
	rollout := time.Now()
	watcher.start(rollout)
	boxLog.echo.Store(true)
	for _, n := range w.Nodes {
		if err := annotate(ctx, kube, n.Name, img.Ref); err != nil {
			stopWatch()
			return err
		}
	}
	werr := waitAll(ctx, kube, 6*time.Minute, "every node Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return (s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned) || (s.State == nodestatus.StateDegraded && s.DesiredImage == img.Ref)
	})
	took := time.Since(rollout)
	time.Sleep(200 * time.Millisecond) // let the watch print the last transitions
	boxLog.echo.Store(false)
	stopWatch()
	<-watchDone
	if werr != nil {
		return werr
	}
	out.printf("Rollout finished in %v", took.Round(100*time.Millisecond))

	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }

	d.printTimeline(watcher, rollout)
	d.printWrites(auditMark)

	// Verify: the apiserver, each sysroot, the harness's reboot counts, the watch.
	out.printf("")
	out.printf("Checks")
	for _, n := range w.Nodes {
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		s := nodestatus.Read(node)
		api := s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned && s.DesiredDigest == img.Digest.String()
		sysDigest, serr := bootedDigest(n)
		sys := serr == nil && sysDigest == img.Digest.String()
		reboots := n.Reboots()
		_, cur, _ := strings.Cut(s.CurrentImage, "@")
		out.printf("  %s  apiserver: %s on %s %s   sysroot booted: %s %s   reboots: %d %s",
			n.Name, s.State, short(cur), mark(api), short(sysDigest), mark(sys), reboots, mark(reboots == 1))
		if !api {
			fail("%s: the apiserver says state=%s reason=%s current-image=%q desired-digest=%q, want Done on %s (%s)",
				n.Name, s.State, s.Reason, s.CurrentImage, s.DesiredDigest, img.Pinned, s.Message)
		}
		if serr != nil {
			fail("%s: reading the sysroot: %v", n.Name, serr)
		} else if !sys {
			fail("%s: the sysroot's booted deployment is %s, want %s", n.Name, sysDigest, img.Digest)
		}
		if reboots != 1 {
			fail("%s: rebooted %d times (counted by the harness), want 1", n.Name, reboots)
		}
		if node.Spec.Unschedulable {
			fail("%s: still cordoned after Done", n.Name)
		}
	}
	overlap := watcher.overlaps()
	out.printf("  at most one node Draining/Rebooting at a time (from the watch): %s", mark(len(overlap) == 0))
	for _, o := range overlap {
		fail("two nodes disrupted at once: %s", o)
	}
	if werr := watcher.err(); werr != nil {
		fail("watching the Nodes: %v", werr)
	}

	// The refusal.
	if err := d.refusal(ctx, fail); err != nil {
		return err
	}

	d.printLogs()
	if len(failures) > 0 {
		return errors.New(strings.Join(failures, "\n"))
	}
	return nil
}

// refusal annotates node-1 with an unsigned image and checks it is refused with nothing done.
func (d *demo) refusal(ctx context.Context, fail func(string, ...any)) error {
	w := d.w
	kube := w.Kube.Client
	n := w.Nodes[0]
	out.printf("")
	done := step("A refusal: building and pushing %s:%s WITHOUT signing it", unsignedSpec.Repo, unsignedSpec.Tag)
	img, err := w.Images.Layered(ctx, w.Base, unsignedSpec)
	if err != nil {
		return fmt.Errorf("building %s: %w", unsignedSpec.Tag, err)
	}
	done()
	reboots := n.Reboots()
	out.printf("Annotating %s with %s", n.Name, img.Ref)
	watcher := newWatcher(w.Registry.Addr())
	wctx, stopWatch := context.WithCancel(ctx)
	watchDone := make(chan error, 1)
	go func() { watchDone <- watcher.run(wctx, kube) }()
	if err := watcher.synced(ctx); err != nil {
		stopWatch()
		return err
	}
	watcher.start(time.Now())
	if err := annotate(ctx, kube, n.Name, img.Ref); err != nil {
		stopWatch()
		return err
	}
	werr := waitAll(ctx, kube, 2*time.Minute, n.Name+" Degraded SignatureRejected", func(s nodestatus.Status) bool {
		return s.DesiredImage != img.Ref || s.State == nodestatus.StateDegraded
	})
	time.Sleep(200 * time.Millisecond)
	stopWatch()
	<-watchDone
	if werr != nil {
		return werr
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	s := nodestatus.Read(node)
	refused := s.State == nodestatus.StateDegraded && s.Reason == reason.SignatureRejected
	out.printf("  %s: %s %s %s", n.Name, s.State, s.Reason, mark(refused))
	out.printf("    %s", watcher.shorten(s.Message))
	if !refused {
		fail("%s: state=%s reason=%s after an unsigned image, want Degraded SignatureRejected (%s)", n.Name, s.State, s.Reason, s.Message)
	}
	staged, serr := stagedDeployment(n)
	out.printf("  nothing staged in the sysroot: %s   not cordoned: %s   no reboot: %s",
		mark(serr == nil && staged == ""), mark(!node.Spec.Unschedulable && s.CordonedBy == ""), mark(n.Reboots() == reboots))
	switch {
	case serr != nil:
		fail("%s: reading the sysroot: %v", n.Name, serr)
	case staged != "":
		fail("%s: a deployment is staged after a refusal: %s", n.Name, staged)
	}
	if s.StagedImage != "" {
		fail("%s: staged-image=%s after a refusal", n.Name, s.StagedImage)
	}
	if node.Spec.Unschedulable || s.CordonedBy != "" {
		fail("%s: cordoned (unschedulable %v, cordoned-by %q) after a refusal", n.Name, node.Spec.Unschedulable, s.CordonedBy)
	}
	if n.Reboots() != reboots {
		fail("%s: rebooted after a refusal", n.Name)
	}
	return nil
}

func (d *demo) startAgent(ctx context.Context, n *harness.Node, bin string) error {
	w := d.w
	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		return fmt.Errorf("the agent kubeconfig of %s: %w", n.Name, err)
	}
	path := filepath.Join(d.logs, n.Name, "agent.log")
	f, err := d.create(path)
	if err != nil {
		return err
	}
	d.agentLog[n.Name] = path
	_, _, err = n.RunPod(harness.PodTemplate{
		Name: "layerd-agent", Path: bin,
		Args: []string{"layerd", "agent", "--node-name", n.Name, "--kubeconfig", kubeconfig,
			"--namespace", harness.AgentNamespace, "--policy", w.Trust.PolicyPath,
			"--registries-d", w.Trust.RegistriesDDir, "--registries-conf", w.Trust.RegistriesConfPath,
			"--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--log-format", "console", "--log-journal", "off"},
		Env: []string{podSystemBus}, Stdout: f, Stderr: f,
	})
	if err != nil {
		return fmt.Errorf("starting the agent pod on %s: %w", n.Name, err)
	}
	return nil // World.Close stops the pods
}

// buildAgent builds ./cmd/layerd (with the caller's GOFLAGS) into dir.
func buildAgent(ctx context.Context, dir string) (string, error) {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return "", fmt.Errorf("finding the module root (run from the repository): %v", err)
	}
	path := filepath.Join(dir, "layerd")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", path, "./cmd/layerd")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/layerd: %w\n%s", err, b)
	}
	return path, nil
}

func annotate(ctx context.Context, kube kubernetes.Interface, node, desired string) error {
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, nodestatus.AnnotationDesiredImage, desired)
	if _, err := kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotating %s: %w", node, err)
	}
	return nil
}

// waitAll polls the Nodes of the box until cond holds for each (the watcher shows progress).
func waitAll(ctx context.Context, kube kubernetes.Interface, timeout time.Duration, what string, cond func(nodestatus.Status) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last []string
	for {
		list, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err == nil {
			ok := len(list.Items) > 0
			last = last[:0]
			for i := range list.Items {
				s := nodestatus.Read(&list.Items[i])
				last = append(last, fmt.Sprintf("%s %s/%s %s %s", list.Items[i].Name, s.State, s.Phase, s.Reason, s.Message))
				ok = ok && cond(s)
			}
			if ok {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting until %s: %w; last seen:\n%s", what, ctx.Err(), strings.Join(last, "\n"))
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// bootedDigest is the manifest digest of the deployment the node's sysroot booted.
func bootedDigest(n *harness.Node) (string, error) {
	b, err := n.Booted()
	if err != nil {
		return "", err
	}
	deps, err := n.Sysroot.Deployments()
	if err != nil {
		return "", err
	}
	for _, d := range deps {
		if !d.Staged && d.Checksum == b.Checksum && d.Serial == b.Serial && d.OSName == b.OSName {
			if d.ManifestDigest == "" {
				return "", fmt.Errorf("the booted deployment %s.%d has no manifest digest", d.Checksum[:12], d.Serial)
			}
			return d.ManifestDigest, nil
		}
	}
	return "", fmt.Errorf("the booted deployment %s.%d is not in the sysroot's deployments", b.Checksum, b.Serial)
}

// stagedDeployment describes the sysroot's staged deployment, "" when there is none.
func stagedDeployment(n *harness.Node) (string, error) {
	deps, err := n.Sysroot.Deployments()
	if err != nil {
		return "", err
	}
	for _, d := range deps {
		if d.Staged {
			return fmt.Sprintf("%s (%s)", d.Checksum, d.ManifestDigest), nil
		}
	}
	return "", nil
}

func (d *demo) auditCount() int {
	evs, err := d.w.Kube.AuditEvents()
	if err != nil {
		return -1
	}
	return len(evs)
}

// printWrites prints the API writes each agent made during the rollout, from the audit log.
func (d *demo) printWrites(mark int) {
	evs, err := d.w.Kube.AuditEvents()
	if err != nil || mark < 0 || mark > len(evs) {
		return
	}
	out.printf("")
	out.printf("API writes by each agent during the rollout (apiserver audit log)")
	per := map[string]map[string]int{}
	total := map[string]int{}
	for _, e := range evs[mark:] {
		node := e.NodeName()
		if !e.IsWrite() || node == "" {
			continue
		}
		k := e.Verb
		if r := e.ObjectRef; r != nil {
			k += " " + r.Resource
			if r.Subresource != "" {
				k += "/" + r.Subresource
			}
		}
		if per[node] == nil {
			per[node] = map[string]int{}
		}
		per[node][k]++
		total[node]++
	}
	for _, n := range d.w.Nodes {
		var kinds []string
		for k, c := range per[n.Name] {
			kinds = append(kinds, fmt.Sprintf("%d %s", c, k))
		}
		sort.Strings(kinds)
		out.printf("  %s  %3d: %s", n.Name, total[n.Name], strings.Join(kinds, ", "))
	}
}

// printTimeline prints, per phase, when each node entered it (offset from the annotation).
func (d *demo) printTimeline(wt *watcher, t0 time.Time) {
	out.printf("")
	out.printf("Timeline (first time each node entered a phase, from the annotation)")
	header := fmt.Sprintf("  %-16s", "phase")
	for _, n := range d.w.Nodes {
		header += fmt.Sprintf(" %9s", n.Name)
	}
	out.printf("%s", header)
	rows := []string{}
	for _, p := range nodestatus.Phases() {
		rows = append(rows, string(p))
	}
	rows = append(rows, string(nodestatus.StateDone), string(nodestatus.StateDegraded))
	first := wt.firstSeen()
	for _, r := range rows {
		line := fmt.Sprintf("  %-16s", r)
		any := false
		for _, n := range d.w.Nodes {
			if t, ok := first[n.Name][r]; ok {
				line += fmt.Sprintf(" %8.1fs", t.Sub(t0).Seconds())
				any = true
			} else {
				line += fmt.Sprintf(" %9s", "-")
			}
		}
		if any {
			out.printf("%s", line)
		}
	}
	line := fmt.Sprintf("  %-16s", "reboots (box)")
	for _, n := range d.w.Nodes {
		line += fmt.Sprintf(" %9d", n.Reboots())
	}
	out.printf("%s", line)
}

func (d *demo) printLogs() {
	out.printf("")
	out.printf("Where each node's logs are (kept after the teardown)")
	for _, n := range d.w.Nodes {
		out.printf("  %s  agent pod (stdout+stderr): %s", n.Name, d.agentLog[n.Name])
		out.printf("  %s  rpm-ostreed stand-in, one per boot: %s", strings.Repeat(" ", len(n.Name)), filepath.Join(d.logs, n.Name, "rpmostreed.<boot>.log"))
	}
	out.printf("  directory-tier nodes have no journal; box: %s", filepath.Join(d.logs, "box.log"))
}

func mark(ok bool) string {
	if ok {
		return "✔"
	}
	return "✘"
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	if d == "" {
		return "<none>"
	}
	return "sha256:" + d
}

// watcher follows every Node, prints each transition of state/phase/reason and remembers when
// each node entered each phase and which nodes were disrupted (Draining/Rebooting) together.
type watcher struct {
	registry string // stripped from messages, as are digests beyond 12 hex digits
	mu       sync.Mutex
	t0       time.Time
	printing bool
	last     map[string]string
	first    map[string]map[string]time.Time
	disrupt  map[string]bool
	overlap  []string
	werr     error
	ready    chan struct{}
	once     sync.Once
}

var longDigest = regexp.MustCompile(`(sha256:[0-9a-f]{12})[0-9a-f]{52}`)

func (wt *watcher) shorten(msg string) string {
	if wt.registry != "" {
		msg = strings.ReplaceAll(msg, wt.registry+"/", "")
	}
	return longDigest.ReplaceAllString(msg, "$1")
}

func newWatcher(registry string) *watcher {
	return &watcher{registry: registry, last: map[string]string{}, first: map[string]map[string]time.Time{}, disrupt: map[string]bool{}, ready: make(chan struct{})}
}

// start begins printing and recording; earlier events only set the baseline.
func (wt *watcher) start(t0 time.Time) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.t0, wt.printing = t0, true
}

func (wt *watcher) synced(ctx context.Context) error {
	select {
	case <-wt.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("the Node watch did not start within 30s")
	}
}

func (wt *watcher) err() error {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.werr
}

func (wt *watcher) overlaps() []string {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return append([]string(nil), wt.overlap...)
}

func (wt *watcher) firstSeen() map[string]map[string]time.Time {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.first
}

func (wt *watcher) note(n *corev1.Node) {
	s := nodestatus.Read(n)
	key := fmt.Sprintf("%s/%s/%s", s.State, s.Phase, s.Reason)
	now := time.Now()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.last[n.Name] == key {
		return
	}
	wt.last[n.Name] = key
	wt.disrupt[n.Name] = s.State == nodestatus.StateWorking && (s.Phase == nodestatus.PhaseDraining || s.Phase == nodestatus.PhaseRebooting)
	if !wt.printing {
		return
	}
	var together []string
	for name, d := range wt.disrupt {
		if d {
			together = append(together, name)
		}
	}
	if len(together) > 1 {
		sort.Strings(together)
		wt.overlap = append(wt.overlap, fmt.Sprintf("%s at +%.1fs", strings.Join(together, " and "), now.Sub(wt.t0).Seconds()))
	}
	label := string(s.Phase)
	if s.State != nodestatus.StateWorking {
		label = string(s.State)
	}
	if wt.first[n.Name] == nil {
		wt.first[n.Name] = map[string]time.Time{}
	}
	if _, ok := wt.first[n.Name][label]; !ok {
		wt.first[n.Name][label] = now
	}
	detail := string(s.Reason)
	if msg := wt.shorten(s.Message); msg != "" {
		if detail != "" && !strings.HasPrefix(msg, detail) {
			detail += ": " + msg
		} else {
			detail = msg
		}
	}
	if len(detail) > 100 {
		detail = detail[:97] + "..."
	}
	out.printf("%-12s %-7s %-8s %-9s %-15s %s", now.Format("15:04:05.000"), fmt.Sprintf("+%.1fs", now.Sub(wt.t0).Seconds()),
		n.Name, s.State, s.Phase, detail)
}

// run lists and watches the Nodes until ctx ends, re-watching on a dropped watch.
func (wt *watcher) run(ctx context.Context, kube kubernetes.Interface) error {
	for ctx.Err() == nil {
		list, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		for i := range list.Items {
			wt.note(&list.Items[i])
		}
		wt.once.Do(func() { close(wt.ready) })
		wi, err := kube.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				break
			}
			if n, ok := ev.Object.(*corev1.Node); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				wt.note(n)
			}
		}
		wi.Stop()
	}
	return nil
}

// lineWriter stamps each line of the harness's progress log.
type lineWriter struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	echo atomic.Bool
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		now := time.Now()
		fmt.Fprintf(l.w, "%s %s\n", now.Format("15:04:05.000"), l.buf[:i])
		if l.echo.Load() { // reboots as the box performs them, among the transitions
			if line := string(l.buf[:i]); strings.Contains(line, "rebooting") || strings.Contains(line, ": booted") {
				out.printf("%-12s %-7s %s", now.Format("15:04:05.000"), "", line)
			}
		}
		l.buf = l.buf[i+1:]
	}
}
