package drain_test

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"

	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/nodestatus"
)

// The update loop's side of the cordon contract: cordoned-by is written through nodestatus
// before the cordon, dropped again when someone else's cordon won the race, and only a cordon
// recorded as ours is ever lifted.
func ExampleDrainer_Cordon() {
	ctx := context.Background()
	var client kubernetes.Interface = fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}})
	log := zap.NewNop()
	status, err := nodestatus.New(client, "node-a", clock.RealClock{}, log)
	if err != nil {
		fmt.Println(err)
		return
	}
	d, err := drain.New(client, "node-a", drain.Options{}, log)
	if err != nil {
		fmt.Println(err)
		return
	}

	cordon := func() (ours bool, err error) {
		node, err := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if node.Spec.Unschedulable { // someone's cordon; ours only if recorded (restart)
			return nodestatus.Read(node).CordonedByUs(), nil
		}
		if err := status.SetCordonedBy(ctx); err != nil {
			return false, err
		}
		ours, err = d.Cordon(ctx)
		if err == nil && !ours { // cordoned by someone else in between
			err = status.ClearCordonedBy(ctx)
		}
		return ours, err
	}

	ours, err := cordon()
	fmt.Println("cordoned by us:", ours, err)

	// ... d.Drain(ctx): on a *drain.TimeoutError the loop reports Degraded DrainTimeout with
	// its message, then uncordons (if ours) and releases the slot, as below.

	if ours {
		err = errors.Join(d.Uncordon(ctx), status.ClearCordonedBy(ctx))
	}
	node, getErr := client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
	if err = errors.Join(err, getErr); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("unschedulable:", node.Spec.Unschedulable, "cordoned by us:", nodestatus.Read(node).CordonedByUs())
	// Output:
	// cordoned by us: true <nil>
	// unschedulable: false cordoned by us: false
}
