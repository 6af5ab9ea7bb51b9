package agent_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/zap"
	clocktesting "k8s.io/utils/clock/testing"

	"layerd.dev/layerd/daemon/agent"
	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/rpmostree"
)

func digestOf(s string) digest.Digest { return digest.Digest(s) }

func countPrefix(calls []string, prefix string) int {
	n := 0
	for _, c := range calls {
		if strings.HasPrefix(c, prefix) {
			n++
		}
	}
	return n
}

func TestNew(t *testing.T) {
	t.Run("rejects_missing_dependencies_naming_them", func(t *testing.T) {
		_, err := agent.New(agent.Deps{Log: zap.NewNop()}, agent.Config{})
		if err == nil {
			t.Fatal("New accepted empty Deps")
		}
		for _, name := range []string{"Kube", "Machine", "Status", "Slots", "Drainer", "Images", "Host", "HostFS", "Clock", "node name"} {
			if !strings.Contains(err.Error(), name) {
				t.Errorf("error %q does not name %s", err, name)
			}
		}
	})
}

func TestAgent(t *testing.T) {
	t.Run("updates_to_the_desired_image_rebooting_once", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.start()
		st := f.waitFor("Done on v2", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
		calls := host.Calls()
		if n := countPrefix(calls, "StageImage"); n != 1 {
			t.Errorf("%d StageImage calls, want 1: %v", n, calls)
		}
		if n := countPrefix(calls, "FinalizeDeployment "+v2Dig); n != 1 {
			t.Errorf("%d FinalizeDeployment calls, want 1: %v", n, calls)
		}
		if got := f.drainer.Calls(); !slices.Equal(got, []string{"Cordon", "Drain", "Uncordon"}) {
			t.Errorf("drain calls %v, want Cordon Drain Uncordon", got)
		}
		if st.CordonedBy != "" || st.StagedImage != "" || st.Phase != "" {
			t.Errorf("leftovers after Done: %+v", st)
		}
		if n := f.leases(); n != 0 {
			t.Errorf("%d slot Leases after Done, want 0 (released)", n)
		}
		if st.DesiredDigest != v2Dig {
			t.Errorf("desired-digest %q, want %s", st.DesiredDigest, v2Dig)
		}
		if n := f.nodeLists(); n != 1 {
			t.Errorf("%d LISTs of Nodes, want 1 (the informer's start; then a watch)", n)
		}
		if lines := f.notifier.Lines(); len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "Done "+repo+":v2") {
			t.Errorf("sd_notify STATUS lines %q, want the last to say Done on %s:v2", lines, repo)
		}
		m := f.scrape()
		for _, want := range []string{"layerd_reboots_total 1", `layerd_state{state="Done"} 1`, `layerd_state{state="Working"} 0`} {
			if !strings.Contains(m, want+"\n") {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})

	t.Run("the_same_image_twice_is_a_no-op", func(t *testing.T) {
		host := &fakeHost{booted: v2Dig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.start()
		f.waitFor("Done on v2", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
		time.Sleep(100 * time.Millisecond)
		if calls := host.Calls(); len(calls) != 0 {
			t.Errorf("rpm-ostree calls for the booted image: %v", calls)
		}
		if calls := f.drainer.Calls(); len(calls) != 0 {
			t.Errorf("drain calls for the booted image: %v", calls)
		}
	})

	t.Run("an_unsigned_image_ends_Degraded_SignatureRejected_with_nothing_staged", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.images.VerifyFunc = func(_ context.Context, r *image.Resolved) (*image.Verdict, error) {
			return nil, &image.Error{Code: reason.SignatureRejected, Image: r.Pinned, Err: errors.New("a signature was required")}
		}
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.SignatureRejected {
			t.Errorf("reason %s, want SignatureRejected (message %q)", st.Reason, st.Message)
		}
		time.Sleep(100 * time.Millisecond)
		if calls := host.Calls(); len(calls) != 0 {
			t.Errorf("rpm-ostree calls after a rejected signature: %v", calls)
		}
		if calls := f.drainer.Calls(); len(calls) != 0 {
			t.Errorf("drain calls after a rejected signature: %v", calls)
		}
		if n := f.leases(); n != 0 {
			t.Errorf("%d slot Leases after a rejected signature", n)
		}
		if f.node().Spec.Unschedulable || st.CordonedBy != "" {
			t.Errorf("cordoned after a rejected signature")
		}
	})

	t.Run("a_new_desired_image_recovers_a_Degraded_node", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":nope"), host)
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.ImageNotFound {
			t.Errorf("reason %s, want ImageNotFound", st.Reason)
		}
		f.annotate(nodestatus.AnnotationDesiredImage, repo+":v3")
		f.waitFor("Done on v3", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v3Dig
		})
	})

	t.Run("a_restart_mid-staging_re-attaches_instead_of_staging_again", func(t *testing.T) {
		host := &fakeHost{booted: baseDig, activeTxn: "unix:path=/run/rpm-ostree-txn-1"}
		n := readyNode(repo + ":v2")
		n.Annotations[nodestatus.AnnotationState] = string(nodestatus.StateWorking)
		n.Annotations[nodestatus.AnnotationPhase] = string(nodestatus.PhaseStaging)
		n.Annotations[nodestatus.AnnotationDesiredDigest] = v2Dig
		n.Annotations[nodestatus.AnnotationResolvedImage] = repo + ":v2"
		// The transaction that was running stages v2 when it ends.
		host.staged = v2Dig
		f := newFixture(t, n, host)
		f.start()
		f.waitFor("Done on v2", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
		calls := host.Calls()
		if countPrefix(calls, "Attach") != 1 || countPrefix(calls, "StageImage") != 0 {
			t.Errorf("host calls %v: want one Attach and no StageImage", calls)
		}
		if countPrefix(calls, "FinalizeDeployment") != 1 {
			t.Errorf("host calls %v: want one FinalizeDeployment", calls)
		}
	})

	t.Run("a_new_desired_image_mid-staging_interrupts_and_the_second_wins", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		entered := make(chan struct{}, 1)
		host.stageBlock = func(ctx context.Context) error {
			select {
			case entered <- struct{}{}:
				host.mu.Lock()
				host.stageBlock = nil
				host.mu.Unlock()
				<-ctx.Done()
				return ctx.Err()
			default:
				return nil
			}
		}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.start()
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("staging never began")
		}
		f.annotate(nodestatus.AnnotationDesiredImage, repo+":v3")
		f.waitFor("Done on v3", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v3Dig
		})
		calls := host.Calls()
		if countPrefix(calls, "FinalizeDeployment") != 1 || countPrefix(calls, "FinalizeDeployment "+v3Dig) != 1 {
			t.Errorf("host calls %v: want exactly one finalize, of v3", calls)
		}
	})

	t.Run("a_reboot_blocked_by_an_inhibitor_keeps_the_staged_deployment_and_frees_the_slot", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.inhibited()
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.RebootInhibited || !strings.Contains(st.Message, "backup") {
			t.Errorf("reason %s message %q, want RebootInhibited naming the holder", st.Reason, st.Message)
		}
		f.waitFor("uncordoned", func(s nodestatus.Status) bool { return s.CordonedBy == "" })
		deadline := time.Now().Add(5 * time.Second)
		for f.leases() != 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := f.leases(); n != 0 {
			t.Errorf("%d slot Leases after RebootInhibited, want 0", n)
		}
		if calls := host.Calls(); countPrefix(calls, "FinalizeDeployment") != 0 || countPrefix(calls, "Cleanup") != 0 {
			t.Errorf("host calls %v: want no finalize and the staged deployment kept", calls)
		}
	})
}

func TestAgentWaitingForASlot(t *testing.T) {
	t.Run("names_the_holder_and_a_removed_desired-image_cleans_up_without_taking_a_slot", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.holdSlot("node-9")
		f.start()
		st := f.waitFor("WaitingForSlot", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, "node-9")
		})
		if !strings.Contains(st.Message, "held by node-9") {
			t.Errorf("message %q does not name the holder", st.Message)
		}
		f.annotate(nodestatus.AnnotationDesiredImage, "")
		st = f.waitFor("Done without desired-image", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.StagedImage == "" && s.DesiredDigest == ""
		})
		if st.CurrentImage != repo+"@"+baseDig {
			t.Errorf("current-image %q, want the booted base", st.CurrentImage)
		}
		calls := host.Calls()
		if countPrefix(calls, "Cleanup") != 1 || countPrefix(calls, "FinalizeDeployment") != 0 {
			t.Errorf("host calls %v: want one Cleanup and no finalize", calls)
		}
		if got := f.slotHolder(); got != "node-9" {
			t.Errorf("slot held by %q, want node-9 still", got)
		}
		if calls := f.drainer.Calls(); len(calls) != 0 {
			t.Errorf("drain calls while waiting for a slot: %v", calls)
		}
	})
}

func TestAgentBackoff(t *testing.T) {
	t.Run("a_failed_staging_transaction_is_retried_after_the_backoff_on_the_injected_clock", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		failed := false
		host.stageBlock = func(context.Context) error {
			if failed {
				return nil
			}
			failed = true
			return &rpmostree.TxnError{Method: "Rebase", Message: "pulling: connection reset"}
		}
		clk := clocktesting.NewFakeClock(time.Now())
		f := newFixtureWithClock(t, readyNode(repo+":v2"), host, clk)
		f.start()
		st := f.waitFor("Degraded StageFailed", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.StageFailed || !strings.Contains(st.Message, "connection reset") {
			t.Errorf("reason %s message %q, want StageFailed with rpm-ostree's message", st.Reason, st.Message)
		}
		time.Sleep(100 * time.Millisecond)
		if n := countPrefix(host.Calls(), "StageImage"); n != 1 {
			t.Fatalf("%d StageImage calls before the backoff ran out, want 1", n)
		}
		// Time passes only on the fake clock: each tick is longer than the backoff's cap.
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
					clk.Step(40 * time.Minute)
				}
			}
		}()
		f.waitFor("Done on v2", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
		if n := countPrefix(host.Calls(), "StageImage"); n != 2 {
			t.Errorf("%d StageImage calls, want 2 (the failure and the retry)", n)
		}
	})
}
