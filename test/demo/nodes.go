package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

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
	_, _, err = n.RunPod(w.AgentPod(n, bin, kubeconfig, f, "--log-journal", "auto"))
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
func waitAll(ctx context.Context, kube kubernetes.Interface, timeout time.Duration, what string, cond func(node string, s nodestatus.Status) bool) error {
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
				ok = ok && cond(list.Items[i].Name, s)
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

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// keepJournals copies each booted node's persistent journal into the logs, rotated first so
// that the copy holds closed (archived) files: the node is gone after the teardown.
func (d *demo) keepJournals() {
	d.journal = map[string]string{}
	for _, n := range d.w.Nodes {
		if !n.BootedTier() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if _, err := n.Journal(ctx, "--rotate"); err != nil {
			out.printf("  %s: rotating the journal: %v", n.Name, err)
		}
		dst := filepath.Join(d.logs, n.Name, "journal")
		src := filepath.Join(n.Sysroot.StaterootVar(), "log", "journal")
		if b, err := exec.CommandContext(ctx, "cp", "-a", src, dst).CombinedOutput(); err != nil {
			out.printf("  %s: keeping the journal: %v: %s", n.Name, err, b)
		} else {
			d.journal[n.Name] = dst
		}
		cancel()
	}
}

// journalCheck shows the agent's records of the update in a booted node's journal, selected
// by their fields as an admin would on the host.
func (d *demo) journalCheck(ctx context.Context, n *harness.Node, img *osimage.Image, fail func(string, ...any)) {
	args := []string{"-t", "layerd", "LAYERD_DIGEST=" + img.Digest.String(), "LAYERD_PHASE=Staging", "-o", "cat"}
	j, err := n.Journal(ctx, args...)
	lines := strings.Split(strings.TrimSpace(j), "\n")
	if strings.TrimSpace(j) == "" {
		lines = nil
	}
	out.printf("  %s  journalctl -t layerd LAYERD_DIGEST=%s LAYERD_PHASE=Staging (inside): %d records %s",
		strings.Repeat(" ", len(n.Name)), short(img.Digest.String()), len(lines), mark(err == nil && len(lines) > 0))
	switch {
	case err != nil:
		fail("%s: reading its journal: %v", n.Name, err)
	case len(lines) == 0:
		fail("%s: no layerd records of the staging of %s in its journal", n.Name, img.Digest)
	}
}
