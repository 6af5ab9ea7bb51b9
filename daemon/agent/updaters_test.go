package agent_test

import (
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/pkg/updaters"
)

func TestAgentAndOtherUpdaters(t *testing.T) {
	t.Run("registers_as_rpm-ostree's_update_driver_when_it_stages", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.start()
		f.waitFor("Done on v2", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
		if got := host.Drivers(); !slices.Equal(got, []string{updaters.Self}) {
			t.Errorf("register-driver of the StageImage calls = %q, want [%s]", got, updaters.Self)
		}
	})

	t.Run("refuses_to_stage_while_zincati_owns_the_host_and_stages_once_the_pool_allows_it", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.updaters.Found = []updaters.Updater{{Name: updaters.Zincati, Evidence: "zincati.service is active"}}
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.ConflictingUpdater || !strings.Contains(st.Message, "zincati.service is active") {
			t.Fatalf("reason %s message %q, want ConflictingUpdater naming zincati and its evidence", st.Reason, st.Message)
		}
		if n := countPrefix(host.Calls(), "StageImage"); n != 0 {
			t.Fatalf("%d StageImage calls while another updater owns the host", n)
		}
		if f.node().Spec.Unschedulable || f.leases() != 0 {
			t.Fatal("cordoned or holding a slot after ConflictingUpdater")
		}
		// The admin allows zincati in the pool policy and asks for a retry now (the transient
		// reason would also be retried after the backoff).
		f.poolPolicy("default:\n  " + updaters.PolicyKey + ": [zincati]\n")
		f.annotate(nodestatus.AnnotationRetry, "1")
		f.waitFor("Done on v2 once allowed", func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == repo+"@"+v2Dig
		})
	})

	t.Run("a_boot_into_the_old_image_reports_the_previous_boot's_finalize_error", func(t *testing.T) {
		host := &fakeHost{booted: baseDig, bootOld: true}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.finalize.msg = "error: mkdir(boot/loader.0): Operation not permitted; unit result: exit-code"
		f.start()
		st := f.waitFor("Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })
		if st.Reason != reason.BootedWrongImage || !strings.Contains(st.Message, "mkdir(boot/loader.0): Operation not permitted") {
			t.Fatalf("reason %s message %q, want BootedWrongImage carrying the finalize error", st.Reason, st.Message)
		}
		if n := f.finalize.Reads(); n != 1 {
			t.Errorf("the journal was read %d times, want once", n)
		}
	})

	t.Run("does_not_read_the_journal_on_a_good_boot", func(t *testing.T) {
		host := &fakeHost{booted: baseDig}
		f := newFixture(t, readyNode(repo+":v2"), host)
		f.start()
		f.waitFor("Done on v2", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
		if n := f.finalize.Reads(); n != 0 {
			t.Errorf("the journal was read %d times after a boot into the desired image", n)
		}
	})
}
