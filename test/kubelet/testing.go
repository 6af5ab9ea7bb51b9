package kubelet

import (
	"context"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"
)

// RunForTest runs a kubelet stand-in for node until the test ends; a Run error or a stand-in
// that does not stop within 15 s fails the test. Logs go to t.Logf unless opts.Logf is set.
func RunForTest(t testing.TB, client kubernetes.Interface, node string, opts Options) *Kubelet {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	k := New(client, node, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("kubelet stand-in for %s: %v", node, err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("kubelet stand-in for %s did not stop", node)
		}
	})
	return k
}
