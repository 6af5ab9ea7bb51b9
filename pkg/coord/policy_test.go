package coord_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"layerd.dev/layerd/pkg/nodestatus"
)

func TestNodePolicy(t *testing.T) {
	doc := "workers:\n  drainTimeout: 8s\n  drain:\n    force: true\ndefault:\n  drainTimeout: 1m\n"

	t.Run("returns_the_pool_of_the_nodes_label_and_its_fields", func(t *testing.T) {
		w := newFake(t, configMap(doc), node("w-1", true, nodestatus.StateDone, map[string]string{nodestatus.LabelPool: "workers"}))
		pool, p, err := w.slots.NodePolicy(context.Background(), "w-1")
		if err != nil || pool != "workers" {
			t.Fatalf("pool %q, %v; want workers", pool, err)
		}
		if got := string(p.Raw["drainTimeout"]); got != `"8s"` {
			t.Errorf("drainTimeout %s, want \"8s\"", got)
		}
		if got := string(p.Raw["drain"]); got != `{"force":true}` {
			t.Errorf("drain %s", got)
		}
	})

	t.Run("a_node_without_the_label_is_in_the_default_pool", func(t *testing.T) {
		w := newFake(t, configMap(doc), node("n-1", true, nodestatus.StateDone, nil))
		pool, p, err := w.slots.NodePolicy(context.Background(), "n-1")
		if err != nil || pool != nodestatus.DefaultPool || string(p.Raw["drainTimeout"]) != `"1m"` {
			t.Fatalf("pool %q, fields %v, %v; want default with drainTimeout 1m", pool, p.Raw, err)
		}
	})

	t.Run("an_unlisted_pool_or_a_missing_configmap_has_no_fields", func(t *testing.T) {
		w := newFake(t, node("g-1", true, nodestatus.StateDone, map[string]string{nodestatus.LabelPool: "gpu"}))
		pool, p, err := w.slots.NodePolicy(context.Background(), "g-1")
		if err != nil || pool != "gpu" || len(p.Raw) != 0 {
			t.Fatalf("pool %q, fields %v, %v; want gpu with none", pool, p.Raw, err)
		}
	})

	t.Run("reads_the_node_and_the_configmap_again_at_every_call", func(t *testing.T) {
		w := newFake(t, configMap(doc), node("w-1", true, nodestatus.StateDone, map[string]string{nodestatus.LabelPool: "workers"}))
		for range 2 {
			if _, _, err := w.slots.NodePolicy(context.Background(), "w-1"); err != nil {
				t.Fatal(err)
			}
		}
		gets := map[string]int{}
		for _, a := range w.cs.Actions() {
			if a.GetVerb() == "get" {
				gets[a.GetResource().Resource]++
			}
		}
		if gets["nodes"] != 2 || gets["configmaps"] != 2 {
			t.Fatalf("GETs %v, want 2 of nodes and 2 of configmaps", gets)
		}
	})

	t.Run("a_missing_node_is_an_error_naming_it", func(t *testing.T) {
		w := newFake(t, configMap(doc))
		if _, _, err := w.slots.NodePolicy(context.Background(), "gone"); err == nil || !strings.Contains(err.Error(), "gone") {
			t.Fatalf("err %v, want one naming node gone", err)
		}
	})

	t.Run("a_malformed_pools_document_is_an_error_naming_the_pool", func(t *testing.T) {
		w := newFake(t, configMap("workers: [not, a, map]\n"), node("w-1", true, nodestatus.StateDone, map[string]string{nodestatus.LabelPool: "workers"}))
		if _, _, err := w.slots.NodePolicy(context.Background(), "w-1"); err == nil || !strings.Contains(err.Error(), "pool workers") {
			t.Fatalf("err %v, want a parse error naming pool workers", err)
		}
	})

	t.Run("a_failed_configmap_read_is_returned", func(t *testing.T) {
		w := newFake(t, node("w-1", true, nodestatus.StateDone, nil))
		w.cs.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("apiserver away")
		})
		if _, _, err := w.slots.NodePolicy(context.Background(), "w-1"); err == nil || !strings.Contains(err.Error(), "apiserver away") {
			t.Fatalf("err %v", err)
		}
	})
}
