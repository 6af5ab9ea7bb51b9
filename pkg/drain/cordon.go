package drain

import (
	"context"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
)

// Cordon marks the node unschedulable and reports whether this call made the cordon.
//
// cordonedByUs is false, and nothing is written, when the node already was unschedulable: the
// cordon belongs to someone else (an admin, another tool) and the agent must never lift it.
// The write carries the resourceVersion it read as a precondition, so a cordon someone else
// makes between the read and the write is detected (conflict, read again) and not claimed.
//
// The caller owns the layerd.dev/cordoned-by record, written through nodestatus (the Node's one
// writer), in this order so a crash at any point leaves no cordon the agent cannot attribute:
//
//  1. node already unschedulable: ours only if nodestatus.Read(node).CordonedByUs() (a cordon
//     from before a restart); do not call Cordon.
//  2. otherwise Writer.SetCordonedBy, then Cordon;
//  3. if Cordon returned false (someone cordoned in between), Writer.ClearCordonedBy.
//
// Later, Uncordon only when CordonedByUs, then Writer.ClearCordonedBy.
func (d *Drainer) Cordon(ctx context.Context) (cordonedByUs bool, err error) {
	changed, err := d.setUnschedulable(ctx, true)
	if err != nil {
		return false, fmt.Errorf("cordoning node %s: %w", d.node, err)
	}
	if changed {
		d.log.Info("node cordoned")
	} else {
		d.log.Info("node was already cordoned by someone else; leaving that cordon alone")
	}
	return changed, nil
}

// Uncordon marks the node schedulable again; a schedulable node is left as it is. It does not
// check who cordoned: call it only for a cordon Cordon reported as ours.
func (d *Drainer) Uncordon(ctx context.Context) error {
	changed, err := d.setUnschedulable(ctx, false)
	if err != nil {
		return fmt.Errorf("uncordoning node %s: %w", d.node, err)
	}
	if changed {
		d.log.Info("node uncordoned")
	} else {
		d.log.Debug("node was already schedulable")
	}
	return nil
}

// setUnschedulable sets spec.unschedulable to want and reports whether it changed it. The
// merge patch carries the resourceVersion read, so the API server rejects it (409) if the
// Node changed in between; then the Node is read again.
func (d *Drainer) setUnschedulable(ctx context.Context, want bool) (changed bool, err error) {
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		changed = false
		node, err := d.client.CoreV1().Nodes().Get(ctx, d.node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if node.Spec.Unschedulable == want {
			return nil
		}
		var value any // null removes the field: false is its default
		if want {
			value = true
		}
		patch, err := json.Marshal(map[string]any{
			"metadata": map[string]any{"resourceVersion": node.ResourceVersion},
			"spec":     map[string]any{"unschedulable": value},
		})
		if err != nil {
			return fmt.Errorf("encoding patch: %w", err)
		}
		if _, err := d.client.CoreV1().Nodes().Patch(ctx, d.node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			d.log.Debug("patching spec.unschedulable", zap.Bool("unschedulable", want), zap.Error(err))
			return err
		}
		changed = true
		return nil
	})
	return changed, err
}
