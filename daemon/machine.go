package daemon

import (
	"fmt"
	"slices"
	"time"
)

// Decision is what one Step decided.
type Decision struct {
	// Next is the state after the step (the State to pass to the next Step).
	Next State
	// Effects are executed in order, stopping at the first failure.
	Effects []Effect
	// RetryAfter, when positive, asks for another Step after this long even if nothing is
	// observed to change (backoff, slot polling, settle time).
	RetryAfter time.Duration
	// Err is a bug in the state machine (an illegal transition, an unknown phase). Next is then
	// the State stepped from and Effects is empty.
	Err error
}

// Step decides what to do next from cur and what was observed. With the zero State it derives
// the state first (Derive). It does no I/O.
func (m *Machine) Step(cur State, obs Observed) Decision {
	if cur.Phase == "" {
		cur = Derive(obs)
	}
	if _, known := Transitions[cur.Phase]; !known {
		return Decision{Next: cur, Err: fmt.Errorf("step: unknown phase %q", cur.Phase)}
	}
	if obs.InFlight != "" {
		return m.whileInFlight(cur, obs)
	}
	last := obs.Last
	if last.Effect != "" && !last.Failed() {
		cur.Retries = 0
	}
	if last.Failed() && last.Code == "" {
		// An infrastructure error (API server, D-Bus): the phase's effects are asked for again
		// after a backoff; the update itself has not failed.
		cur.Retries++
		return Decision{Next: cur, RetryAfter: m.retryInPlace(cur.Retries)}
	}

	var d Decision
	switch cur.Phase {
	case PhaseIdle:
		d = m.idle(cur, obs)
	case PhaseDone:
		d = m.done(cur, obs)
	case PhaseResolving:
		d = m.resolving(cur, obs)
	case PhaseVerifying:
		d = m.verifying(cur, obs)
	case PhaseStaging:
		d = m.staging(cur, obs)
	case PhaseStaged:
		d = m.staged(cur, obs)
	case PhaseWaitingForSlot:
		d = m.waitingForSlot(cur, obs)
	case PhaseDraining:
		d = m.draining(cur, obs)
	case PhaseRebooting:
		d = m.rebooting(cur, obs)
	case PhaseConfirming:
		d = m.confirming(cur, obs)
	case PhaseDegraded:
		d = m.degraded(cur, obs)
	default:
		return Decision{Next: cur, Err: fmt.Errorf("step: no handler for phase %s", cur.Phase)}
	}
	if err := CheckTransition(cur.Phase, d.Next.Phase); err != nil {
		return Decision{Next: cur, Err: err}
	}
	if d.Next.Phase != cur.Phase {
		d.Next.Retries = 0
	}
	d.Effects = beforeWork(ackRetry(obs, d.Effects), restoreEtc(d.Next, obs))
	return d
}

// cancellable phases stop their running effect when desired-image changes or is removed.
func cancellable(p Phase) bool {
	switch p {
	case PhaseResolving, PhaseVerifying, PhaseStaging, PhaseDraining:
		return true
	}
	return false
}

// whileInFlight decides while an effect still runs: only an Interrupt, or nothing.
func (m *Machine) whileInFlight(cur State, obs Observed) Decision {
	if cancellable(cur.Phase) && changed(cur, obs) {
		return Decision{Next: cur, Effects: []Effect{Interrupt{Effect: obs.InFlight}}}
	}
	return Decision{Next: cur}
}

// ackRetry records a new retry value in every phase, so one set while nothing had failed does
// not retry a later failure at once. Degraded acts on it (degraded).
func ackRetry(obs Observed, effects []Effect) []Effect {
	st := obs.Node.Status
	if !st.RetryRequested() || slices.ContainsFunc(effects, func(e Effect) bool { _, ok := e.(AckRetry); return ok }) {
		return effects
	}
	return append([]Effect{AckRetry{Value: st.Retry}}, effects...)
}

func stay(cur State, effects ...[]Effect) Decision {
	return Decision{Next: cur, Effects: concat(effects...)}
}

// beforeWork puts extra right after the leading reports (AckRetry, Report: what the Node says
// comes first) and before the rest of effects: a failing one stops the list (no Finalize while
// /etc is not the admin's), and the phase's own last effect stays the Outcome the next Step sees.
func beforeWork(effects, extra []Effect) []Effect {
	if len(extra) == 0 {
		return effects
	}
	i := 0
	for i < len(effects) {
		switch effects[i].(type) {
		case Report, AckRetry:
			i++
			continue
		}
		break
	}
	return concat(effects[:i], extra, effects[i:])
}

func concat(lists ...[]Effect) []Effect {
	var out []Effect
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}
