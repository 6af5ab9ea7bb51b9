package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/coord"
	ns "layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/kube"
)

// The real control plane, started by the first test that needs it (unit tests of this package
// never start it) and stopped by TestMain.
var plane = &kube.Lazy{Options: kube.Options{NoControllerManager: true}}

func TestMain(m *testing.M) { plane.Main(m) }

// TestNodesCommand runs `layerd nodes` against a real kube-apiserver holding annotated nodes
// and a slot Lease, and checks the table and the JSON.
func TestNodesCommand(t *testing.T) {
	c := plane.Get(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const namespace = "layerd-nodes-test"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const (
		cur     = "registry.test/fcos/os@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
		desired = "registry.test/fcos/os:v2"
	)
	changed := time.Now().Add(-3 * time.Minute).UTC().Truncate(time.Second)
	mk := func(name string, labels, ann map[string]string) {
		t.Helper()
		labels["layerd-nodes-test"] = "yes"
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: ann}}
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("nodes-a", map[string]string{}, map[string]string{
		ns.AnnotationCurrentImage: cur, ns.AnnotationDesiredImage: desired,
		ns.AnnotationState: string(ns.StateWorking), ns.AnnotationPhase: string(ns.PhaseDraining),
		ns.AnnotationLastTransition: changed.Format(time.RFC3339),
	})
	mk("nodes-b", map[string]string{}, map[string]string{
		ns.AnnotationCurrentImage: cur, ns.AnnotationDesiredImage: desired,
		ns.AnnotationState: string(ns.StateDegraded), ns.AnnotationReason: "SignatureRejected",
		ns.AnnotationMessage: "no signature", ns.AnnotationLastTransition: changed.Format(time.RFC3339),
	})
	mk("nodes-c", map[string]string{ns.LabelPool: "gpu"}, map[string]string{})
	holder := "nodes-a"
	lease := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: coord.LeaseName("default", 0), Namespace: namespace,
			Labels: map[string]string{coord.LabelSlotPool: "default", coord.LabelSlotIndex: "0"}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder},
	}
	if _, err := c.Client.CoordinationV1().Leases(namespace).Create(ctx, lease, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		cmd.SetArgs(append([]string{"nodes", "--kubeconfig", c.KubeconfigPath, "--namespace", namespace,
			"--selector", "layerd-nodes-test=yes"}, args...))
		code := exitCode(cmd.ExecuteContext(ctx))
		return out.String(), errb.String(), code
	}

	t.Run("the_table_shows_pool_short_digest_desired_state_phase_reason_slot_holder_and_age", func(t *testing.T) {
		out, errs, code := run()
		if code != 0 {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("want a header and 3 rows, got:\n%s", out)
		}
		want := [][]string{
			{"NODE", "POOL", "CURRENT", "DESIRED", "STATE", "PHASE", "REASON", "SLOT", "AGE"},
			{"nodes-a", "default", "sha256:0123456789ab", desired, "Working", "Draining", "-", "nodes-a", "3m"},
			{"nodes-b", "default", "sha256:0123456789ab", desired, "Degraded", "-", "SignatureRejected", "nodes-a", "3m"},
			{"nodes-c", "gpu", "-", "-", "-", "-", "-", "-", "-"},
		}
		for i, l := range lines {
			if got := strings.Fields(l); strings.Join(got, " ") != strings.Join(want[i], " ") {
				t.Errorf("row %d: %q, want %q", i, got, want[i])
			}
		}
	})

	t.Run("the_JSON_carries_the_documented_fields", func(t *testing.T) {
		out, errs, code := run("--json")
		if code != 0 {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
		var rep struct {
			SchemaVersion int `json:"schemaVersion"`
			Nodes         []struct {
				Name           string   `json:"name"`
				Pool           string   `json:"pool"`
				CurrentImage   string   `json:"currentImage"`
				DesiredImage   string   `json:"desiredImage"`
				State          string   `json:"state"`
				Phase          string   `json:"phase"`
				Reason         string   `json:"reason"`
				Message        string   `json:"message"`
				Slot           string   `json:"slot"`
				SlotHolders    []string `json:"slotHolders"`
				LastTransition string   `json:"lastTransition"`
			} `json:"nodes"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if rep.SchemaVersion != 1 || len(rep.Nodes) != 3 {
			t.Fatalf("schemaVersion %d, %d nodes:\n%s", rep.SchemaVersion, len(rep.Nodes), out)
		}
		a, b, cc := rep.Nodes[0], rep.Nodes[1], rep.Nodes[2]
		if a.Name != "nodes-a" || a.CurrentImage != cur || a.DesiredImage != desired || a.State != "Working" ||
			a.Phase != "Draining" || a.Slot != coord.LeaseName("default", 0) || a.LastTransition != changed.Format(time.RFC3339) {
			t.Errorf("nodes-a: %+v", a)
		}
		if b.Reason != "SignatureRejected" || b.Message != "no signature" || b.Slot != "" || len(b.SlotHolders) != 1 || b.SlotHolders[0] != "nodes-a" {
			t.Errorf("nodes-b: %+v", b)
		}
		if cc.Pool != "gpu" || cc.SlotHolders == nil || len(cc.SlotHolders) != 0 || cc.LastTransition != "" {
			t.Errorf("nodes-c: %+v", cc)
		}
	})

	t.Run("a_selector_limits_the_list", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		cmd.SetArgs([]string{"nodes", "--kubeconfig", c.KubeconfigPath, "--namespace", namespace, "--selector", ns.LabelPool + "=gpu", "--json"})
		if code := exitCode(cmd.ExecuteContext(ctx)); code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
		var rep NodesReport
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil || len(rep.Nodes) != 1 || rep.Nodes[0].Name != "nodes-c" {
			t.Fatalf("%v: %s", err, out.String())
		}
	})

	t.Run("a_bad_selector_is_bad_usage_with_exit_2", func(t *testing.T) {
		if out, errs, code := run("--selector", "a b c"); code != 2 {
			t.Fatalf("exit %d: %s%s", code, out, errs)
		}
	})

	t.Run("an_unreachable_apiserver_is_a_failure_with_exit_1", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		cmd.SetArgs([]string{"nodes", "--kubeconfig", "/nonexistent/kubeconfig"})
		if code := exitCode(cmd.ExecuteContext(ctx)); code != 1 {
			t.Fatalf("exit %d", code)
		}
	})
}
