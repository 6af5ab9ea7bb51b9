package agent_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
)

func TestAgentSlotGates(t *testing.T) {
	t.Run("a_paused_pool_stages_but_takes_no_slot_until_resumed", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.poolPolicy("default:\n  paused: true\n")
		f.start()
		st := f.waitFor("waiting, paused", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, "paused")
		})
		t.Logf("message: %s", st.Message)
		if st.StagedImage != repo+"@"+v2Dig {
			t.Errorf("staged-image %q: a paused pool still stages", st.StagedImage)
		}
		time.Sleep(200 * time.Millisecond) // a few slot polls
		if n := f.leases(); n != 0 || len(f.drainer.Calls()) != 0 {
			t.Fatalf("%d Leases and drain calls %v in a paused pool", n, f.drainer.Calls())
		}
		f.setPools("default:\n  paused: false\n")
		f.waitFor("Done once resumed", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
	})

	t.Run("rebootPolicy_Manual_waits_for_approve-reboot_of_the_digest", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.poolPolicy("default:\n  rebootPolicy: Manual\n")
		f.start()
		st := f.waitFor("waiting for approval", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, nodestatus.AnnotationApproveReboot+"="+v2Dig)
		})
		t.Logf("message: %s", st.Message)
		f.annotate(nodestatus.AnnotationApproveReboot, v3Dig) // another digest approves nothing
		time.Sleep(200 * time.Millisecond)
		if n, fin := f.leases(), countPrefix(host.Calls(), "FinalizeDeployment"); n != 0 || fin != 0 {
			t.Fatalf("%d Leases, %d finalizations after approving another digest", n, fin)
		}
		f.annotate(nodestatus.AnnotationApproveReboot, v2Dig)
		f.waitFor("Done once approved", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
	})
}

// setPools replaces pools.yaml of the layerd-config ConfigMap written by poolPolicy.
func (f *fixture) setPools(poolsYAML string) {
	f.t.Helper()
	cms := f.kube.CoreV1().ConfigMaps(namespace)
	cm, err := cms.Get(context.Background(), coord.ConfigMapName, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	cm.Data[coord.ConfigKeyPools] = poolsYAML
	if _, err := cms.Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func TestAgentWithAnUnreadablePoolPolicy(t *testing.T) {
	t.Run("an_update_still_reaches_its_end_state", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.kube.PrependReactor("get", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			return true, nil, errors.New("etcdserver: request timed out")
		})
		f.images.VerifyFunc = func(_ context.Context, r *image.Resolved) (*image.Verdict, error) {
			return nil, &image.Error{Code: reason.SignatureRejected, Image: r.Pinned, Err: errors.New("a signature was required")}
		}
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.SignatureRejected {
			t.Fatalf("reason %s (%q), want SignatureRejected", st.Reason, st.Message)
		}
	})
}
