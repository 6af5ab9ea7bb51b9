package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// codedError stands for the owners' typed errors (image.Error, drain.TimeoutError) that carry a
// reason code.
type codedError struct {
	code reason.Code
	err  error
}

func (e *codedError) Error() string           { return string(e.code) + ": " + e.err.Error() }
func (e *codedError) Unwrap() error           { return e.err }
func (e *codedError) ReasonCode() reason.Code { return e.code }

func TestOutcomeOf(t *testing.T) {
	verify := daemon.Verify{Target: targets[imgNew]}
	t.Run("no_error_is_a_success", func(t *testing.T) {
		if o := daemon.OutcomeOf(verify, nil); !o.Succeeded("Verify") || o.Failed() {
			t.Errorf("%+v", o)
		}
	})
	t.Run("a_coded_error_carries_its_reason_on_one_line", func(t *testing.T) {
		err := fmt.Errorf("verifying:\n%w", &codedError{reason.SignatureRejected, errors.New("no signature")})
		o := daemon.OutcomeOf(verify, err)
		if !o.Failed() || o.Code != reason.SignatureRejected || o.Effect != "Verify" {
			t.Errorf("%+v", o)
		}
		if o.Err != "verifying: SignatureRejected: no signature" {
			t.Errorf("Err %q", o.Err)
		}
	})
	t.Run("an_error_without_a_code_is_an_infrastructure_error", func(t *testing.T) {
		o := daemon.OutcomeOf(daemon.Report{}, errors.New("the server is currently unable to handle the request"))
		if !o.Failed() || o.Code != "" {
			t.Errorf("%+v", o)
		}
	})
	t.Run("a_cancelled_context_is_an_interruption_even_under_a_code", func(t *testing.T) {
		err := &codedError{reason.RegistryUnavailable, fmt.Errorf("resolving %s: %w", imgNew, context.Canceled)}
		o := daemon.OutcomeOf(daemon.Resolve{Image: imgNew}, err)
		if !o.Interrupted || o.Failed() || o.Code != "" {
			t.Errorf("%+v", o)
		}
	})
}

func TestSmallParts(t *testing.T) {
	t.Run("resolve_pins_by_replacing_a_digest_or_adding_one_after_the_tag", func(t *testing.T) {
		for in, want := range map[daemon.Resolve]string{
			{Image: imgNew}:                           imgNew,
			{Image: imgNew, Pin: digNew}:              imgNew + "@" + digNew,
			{Image: repo + "@" + digOld, Pin: digNew}: repo + "@" + digNew,
		} {
			if got := in.Ref(); got != want {
				t.Errorf("%+v: %s, want %s", in, got, want)
			}
		}
	})
	t.Run("only_the_update_phases_are_working", func(t *testing.T) {
		for _, p := range daemon.Phases() {
			want := nodestatus.Phase(p).Known()
			if p.Working() != want {
				t.Errorf("%s: Working %t, want %t", p, p.Working(), want)
			}
		}
	})
	t.Run("a_re_attached_transaction_that_staged_something_else_resolves_again_pinned", func(t *testing.T) {
		obs := updating(nodestatus.PhaseStaging, last(daemon.Outcome{Effect: "AttachTxn"}),
			func(o *daemon.Observed) { o.Host.StagedDigest, o.Host.StagedImage = digOther, pinOther })
		cur := daemon.Derive(updating(nodestatus.PhaseStaging, func(o *daemon.Observed) { o.Host.ActiveTxn = txnPath }))
		d := newMachine(t).Step(cur, obs)
		if d.Next.Phase != daemon.PhaseResolving || describe(d.Effects) != "Report(Working/Resolving) Resolve("+imgNew+"@"+idxNew+")" {
			t.Errorf("%s: %s", d.Next.Phase, describe(d.Effects))
		}
	})
}
