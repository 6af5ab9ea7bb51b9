package main

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
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
