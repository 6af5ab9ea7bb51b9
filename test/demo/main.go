// Command demo is `make demo`: layerd's main job end to end on the node-in-a-box.
//
// It brings up three nodes (pool default, maxUnavailable 1): node-1 in the booted tier (its
// ostree deployment really boots under systemd-nspawn with systemd, journald and logind, and
// reboots with `systemctl reboot`), node-2 and node-3 in the directory tier. It builds the
// agent, builds, pushes and signs a layered image on each tier's signed base, runs one agent
// per node the way the DaemonSet runs it, annotates every node, shows each transition live,
// then prints a per-node timeline, the reboots the harness counted and where each node's logs
// and journal are. Finally it shows a refusal: an unsigned image annotated on node-1 ends
// Degraded SignatureRejected with nothing staged.
//
// It exits non-zero unless the apiserver and every node's sysroot both show every node booted
// into its tier's new digest, each node rebooted exactly once and no two nodes were ever
// Draining or Rebooting at the same time. Everything is torn down on every path, Ctrl-C
// included; the logs (and the booted node's journal) are kept in the directory it names.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// nodes in the box; the first booted of them are booted-tier nodes.
const (
	nodes  = 3
	booted = 1
)

// layered is the update the demo rolls out, on each tier's base: a new tool and a changed
// /etc default.
func layered(repo string) osimage.Spec {
	return osimage.Spec{Repo: repo, Tag: "v2", Version: "2.0", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.0\n"},
		"etc/motd":       {Content: "Welcome to layerd demo OS 2.0, now with mytool\n"},
	}}
}

// unsigned is the image nobody signed.
func unsigned(repo string) osimage.Spec {
	return osimage.Spec{Repo: repo, Tag: "v2-unsigned", Version: "2.0-unsigned", Files: map[string]osimage.File{
		"usr/bin/unsigned-tool": {Mode: 0o755, Content: "#!/bin/sh\necho nobody signed me\n"},
	}}
}

// repoOf is the repository of n's tier: the directory tier's base is fcos/os, the booted
// tier's the Debian tree it boots.
func repoOf(n *harness.Node) string {
	if n.BootedTier() {
		return harness.BootedBaseRepo
	}
	return "fcos/os"
}

// buildImage builds and pushes spec on n's tier's base.
func buildImage(ctx context.Context, w *harness.World, n *harness.Node, spec osimage.Spec) (*osimage.Image, error) {
	if n.BootedTier() {
		return w.BootedImage(ctx, spec)
	}
	return w.Images.Layered(ctx, w.Base, spec)
}

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
		d.printLogs()
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
	// journal is the kept copy of each booted node's journal directory.
	journal map[string]string
	// tiers names each node's tier, for the log summary after the teardown.
	tiers map[string]string
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
	d.keepJournals()
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

	done := step("Starting the node-in-a-box: %d nodes in pool %q (maxUnavailable 1, the default), %d of them booted under systemd-nspawn",
		nodes, nodestatus.DefaultPool, booted)
	// A first run debootstraps the booted tier's Debian base (then cached).
	startCtx, cancelStart := context.WithTimeout(ctx, 15*time.Minute)
	d.w, err = harness.New(startCtx, harness.Options{Nodes: nodes, Booted: booted, Dir: filepath.Join(d.dir, "box"), Log: boxLog})
	cancelStart()
	if err != nil {
		d.w = nil // New stopped what it started
		_ = os.RemoveAll(filepath.Join(d.dir, "box"))
		return fmt.Errorf("starting the node-in-a-box: %w", err)
	}
	done()
	w := d.w
	out.printf("  apiserver %s, registry %s", w.Kube.Host, w.Registry.Addr())
	d.tiers = map[string]string{}
	for _, n := range w.Nodes {
		base := w.Base
		d.tiers[n.Name] = "directory tier"
		if n.BootedTier() {
			base, d.tiers[n.Name] = w.BootedBase, "booted tier (systemd-nspawn)"
		}
		out.printf("  %s  %-28s signed base %s", n.Name, d.tiers[n.Name], base.Pinned)
	}

	done = step("Building the agent (go build ./cmd/layerd)")
	b := <-bin
	if b.err != nil {
		return b.err
	}
	done()

	done = step("Building, pushing and signing the update on each tier's base: v2 adds /usr/bin/mytool and changes the /etc/motd default")
	images := map[string]*osimage.Image{} // by repository: one per tier
	target := map[string]*osimage.Image{} // by node
	for _, n := range w.Nodes {
		repo := repoOf(n)
		if images[repo] == nil {
			img, err := buildImage(ctx, w, n, layered(repo))
			if err != nil {
				return fmt.Errorf("building %s:v2: %w", repo, err)
			}
			if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
				return fmt.Errorf("signing %s: %w", img.Pinned, err)
			}
			images[repo] = img
		}
		target[n.Name] = images[repo]
	}
	done()
	for _, repo := range sortedKeys(images) {
		out.printf("  %s = %s", images[repo].Ref, images[repo].Digest)
	}

	done = step("Starting one layerd agent per node, as the DaemonSet does (its ServiceAccount's node-bound token)")
	d.agentLog = map[string]string{}
	for _, n := range w.Nodes {
		if err := d.startAgent(ctx, n, b.path); err != nil {
			return err
		}
	}
	kube := w.Kube.Client
	if err := waitAll(ctx, kube, time.Minute, "every agent reports Done on the base image", func(_ string, s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone
	}); err != nil {
		return err
	}
	done()

	// The rollout.
	auditMark := d.auditCount()
	out.printf("")
	out.printf("Annotating all %d nodes with %s=<their tier's v2>", nodes, nodestatus.AnnotationDesiredImage)
	out.printf("%-12s %-7s %-8s %-9s %-15s %s", "TIME", "+T", "NODE", "STATE", "PHASE", "REASON / MESSAGE")
	rollout := time.Now()
	prog := newProgress(w.Registry.Addr(), rollout)
	watcher, err := w.WatchTransitions(ctx, prog.note)
	if err != nil {
		return err
	}
	boxLog.echo.Store(true)
	for _, n := range w.Nodes {
		if err := annotate(ctx, kube, n.Name, target[n.Name].Ref); err != nil {
			watcher.Stop()
			return err
		}
	}
	werr := waitAll(ctx, kube, 6*time.Minute, "every node Done on its tier's v2", func(node string, s nodestatus.Status) bool {
		img := target[node]
		return (s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned) || (s.State == nodestatus.StateDegraded && s.DesiredImage == img.Ref)
	})
	took := time.Since(rollout)
	time.Sleep(200 * time.Millisecond) // let the watch print the last transitions
	boxLog.echo.Store(false)
	watcher.Stop()
	if werr != nil {
		return werr
	}
	out.printf("Rollout finished in %v", took.Round(100*time.Millisecond))

	var failures []string
	fail := func(format string, args ...any) { failures = append(failures, fmt.Sprintf(format, args...)) }

	d.printTimeline(prog, rollout)
	d.printWrites(auditMark)

	// Verify: the apiserver, each sysroot, the harness's reboot counts, the watch.
	out.printf("")
	out.printf("Checks")
	for _, n := range w.Nodes {
		img := target[n.Name]
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
		if n.BootedTier() {
			d.journalCheck(ctx, n, img, fail)
		}
	}
	overlap := watcher.Overlaps()
	out.printf("  at most one node Draining/Rebooting at a time (from the watch): %s", mark(len(overlap) == 0))
	for _, o := range overlap {
		fail("two nodes disrupted at once: %s", o)
	}

	// The refusal.
	if err := d.refusal(ctx, fail); err != nil {
		return err
	}

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
	spec := unsigned(repoOf(n))
	out.printf("")
	done := step("A refusal: building and pushing %s:%s WITHOUT signing it", spec.Repo, spec.Tag)
	img, err := buildImage(ctx, w, n, spec)
	if err != nil {
		return fmt.Errorf("building %s: %w", spec.Tag, err)
	}
	done()
	reboots := n.Reboots()
	out.printf("Annotating %s with %s", n.Name, img.Ref)
	prog := newProgress(w.Registry.Addr(), time.Now())
	watcher, err := w.WatchTransitions(ctx, prog.note)
	if err != nil {
		return err
	}
	if err := annotate(ctx, kube, n.Name, img.Ref); err != nil {
		watcher.Stop()
		return err
	}
	werr := waitAll(ctx, kube, 2*time.Minute, n.Name+" Degraded SignatureRejected", func(_ string, s nodestatus.Status) bool {
		return s.DesiredImage != img.Ref || s.State == nodestatus.StateDegraded
	})
	time.Sleep(200 * time.Millisecond)
	watcher.Stop()
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
	out.printf("    %s", prog.shorten(s.Message))
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
