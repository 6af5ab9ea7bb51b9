package daemon

import (
	"time"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// fail ends the update in Degraded with code: it reports first, then establishes the failure's
// end state (DESIGN §2). A transient code is retried after capped exponential backoff.
func (m *Machine) fail(cur State, obs Observed, code reason.Code, msg string) Decision {
	if msg == "" {
		msg = code.Description()
	}
	next := State{Phase: PhaseDegraded, Target: cur.Target, Reason: code, Message: msg, Attempt: cur.Attempt + 1}
	var after time.Duration
	if !code.Permanent() {
		after = m.RetryAfter(next.Attempt)
		next.RetryAt = obs.Now.Add(after)
	}
	return Decision{Next: next, Effects: concat(degradedReport(next, obs), endState(next, obs)), RetryAfter: after}
}

func degradedReport(cur State, obs Observed) []Effect {
	if cur.Reason == "" {
		return nil
	}
	return report(obs, Report{State: nodestatus.StateDegraded, Reason: cur.Reason, Message: cur.Message})
}

// endState is what a failure leaves behind, by reason (DESIGN §2), kept true on every step:
//   - after the reboot (BootedWrongImage, HealthGateFailed, RolledBack): the slot is kept so the
//     pool stops; the node is uncordoned (if ours) once it runs Ready;
//   - after the slot (DrainTimeout, RebootInhibited, EtcPolicyFailed, FinalizeFailed): uncordon
//     (if ours), release the slot, keep the locked staged deployment for the retry;
//   - before the slot (every other reason): nothing staged, no cordon, no slot.
func endState(cur State, obs Observed) []Effect {
	switch cur.Reason {
	case reason.BootedWrongImage, reason.HealthGateFailed, reason.RolledBack:
		if obs.Node.Ready {
			return uncordon(obs)
		}
		return nil
	case reason.DrainTimeout, reason.RebootInhibited, reason.EtcPolicyFailed, reason.FinalizeFailed:
		return concat(uncordon(obs), release(obs))
	}
	return tidyAll(cur, obs)
}

// degraded waits for a new desired-image (start over), a new retry value (resume now) or, for
// a transient reason, the end of the backoff (resume).
func (m *Machine) degraded(cur State, obs Observed) Decision {
	st := obs.Node.Status
	switch {
	case changed(cur, obs):
		return m.startOver(cur, obs)
	case st.RetryRequested():
		return m.resume(cur, obs, 0)
	}
	transient := cur.Reason != "" && !cur.Reason.Permanent()
	if transient && cur.RetryAt.IsZero() {
		// Re-derived after a restart: the backoff counts from the failure's transition.
		from := st.LastTransition
		if from.IsZero() || from.After(obs.Now) {
			from = obs.Now
		}
		cur.RetryAt = from.Add(m.RetryAfter(max(cur.Attempt, 1)))
	}
	if transient && !obs.Now.Before(cur.RetryAt) {
		return m.resume(cur, obs, cur.Attempt)
	}
	d := stay(cur, degradedReport(cur, obs), endState(cur, obs))
	if transient {
		d.RetryAfter = cur.RetryAt.Sub(obs.Now)
	}
	return d
}

// resume retries the update of cur: from Staged when its deployment is still staged (never
// pull again), else from a fresh resolution (a fixed tag is picked up).
func (m *Machine) resume(cur State, obs Observed, attempt int) Decision {
	if stagedMatches(cur, obs) {
		return m.toStaged(State{Phase: PhaseDegraded, Target: cur.Target, Attempt: attempt}, obs)
	}
	next := State{Phase: PhaseResolving, Target: Target{Image: obs.Node.Status.DesiredImage}, Attempt: attempt}
	return Decision{Next: next, Effects: actResolving(next, obs)}
}
