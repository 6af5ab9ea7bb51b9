package daemon

import (
	"strings"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// The handlers of the phases that hold a staged deployment: Staged, WaitingForSlot, Draining,
// Rebooting, Confirming. Until Rebooting, a change of desired-image cleans up (uncordon if ours,
// release the slot, remove the staged deployment) and starts over; once Rebooting, the change
// is taken up after the boot.

func (m *Machine) staged(cur State, obs Observed) Decision {
	switch {
	case changed(cur, obs):
		return m.startOver(cur, obs)
	case !stagedMatches(cur, obs):
		return m.restartPinned(cur, obs)
	}
	previewOutcome(&cur, obs.Last)
	if eff := actStaged(cur, obs); len(eff) > 0 {
		cur.Warned = cur.Preview != nil
		return stay(cur, eff)
	}
	next := State{Phase: PhaseWaitingForSlot, Target: cur.Target, Attempt: cur.Attempt}
	return Decision{Next: next, Effects: actWaiting(next, obs)}
}

// actStaged previews /etc and /var (once per Staged state: again after a restart), then
// reports Staged with what the preview found, the first time together with its Warning Events.
func actStaged(cur State, obs Observed) []Effect {
	if cur.Preview == nil {
		return []Effect{PreviewHost{Digest: cur.Target.Digest}}
	}
	r := report(obs, Report{State: nodestatus.StateWorking, Phase: nodestatus.PhaseStaged,
		StagedImage: stagedRef(cur, obs), Message: stagedMessage(cur, obs)})
	if len(r) == 0 || cur.Warned {
		return r
	}
	return concat(previewWarnings(cur, obs), r)
}

func (m *Machine) waitingForSlot(cur State, obs Observed) Decision {
	switch {
	case changed(cur, obs):
		return m.startOver(cur, obs)
	case !stagedMatches(cur, obs):
		return m.restartPinned(cur, obs)
	case obs.SlotHeld:
		next := State{Phase: PhaseDraining, Target: cur.Target, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: actDraining(next, obs)}
	}
	if last := obs.Last; last.Effect == (AcquireSlot{}).Name() && last.Busy {
		cur.Holders, cur.Gate = append([]string(nil), last.Holders...), last.Gate
		d := stay(cur, working(obs, PhaseWaitingForSlot, waitingMessage(cur, obs)))
		d.RetryAfter = m.slotPoll()
		return d
	}
	return stay(cur, actWaiting(cur, obs))
}

func actWaiting(cur State, obs Observed) []Effect {
	return concat(working(obs, PhaseWaitingForSlot, waitingMessage(cur, obs)),
		[]Effect{AcquireSlot{Pool: obs.Node.Status.Pool, Digest: cur.Target.Digest}})
}

func waitingMessage(cur State, obs Observed) string {
	msg := "Waiting for a reboot slot of pool " + obs.Node.Status.Pool
	if cur.Gate != "" {
		return msg + ": " + cur.Gate
	}
	if len(cur.Holders) > 0 {
		msg += ", held by " + strings.Join(cur.Holders, ", ")
	}
	return msg
}

// draining cordons (unless someone else already did) and evicts. Without the slot it goes back
// to waiting for one: only slot holders drain and reboot.
func (m *Machine) draining(cur State, obs Observed) Decision {
	switch {
	case changed(cur, obs):
		return m.startOver(cur, obs)
	case !stagedMatches(cur, obs):
		return m.restartPinned(cur, obs)
	case !obs.SlotHeld:
		next := State{Phase: PhaseWaitingForSlot, Target: cur.Target, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: concat(uncordon(obs), actWaiting(next, obs))}
	}
	last := obs.Last
	switch {
	case last.failedWithCode(Cordon{}.Name()), last.failedWithCode(Drain{}.Name()):
		return m.fail(cur, obs, last.Code, last.Err)
	case last.Succeeded(Drain{}.Name()) && obs.Node.BootID != "":
		next := State{Phase: PhaseRebooting, Target: cur.Target, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: actRebooting(next, obs)}
	}
	return stay(cur, actDraining(cur, obs))
}

func actDraining(cur State, obs Observed) []Effect {
	out := working(obs, PhaseDraining, "Draining the node to reboot into "+about(cur))
	if !obs.Node.Unschedulable {
		out = append(out, Cordon{})
	}
	return append(out, Drain{})
}

// rebooting checks inhibitors, records the boot ID, reports Rebooting, applies etcPolicy
// ImageWins and finalizes, holding the slot. It finalizes only while the boot ID is the one recorded, so it never reboots twice;
// changes of desired-image wait for the boot.
func (m *Machine) rebooting(cur State, obs Observed) Decision {
	if rebooted(obs) {
		next := State{Phase: PhaseConfirming, Target: cur.Target, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: working(obs, PhaseConfirming, confirmingMessage(next))}
	}
	last := obs.Last
	switch {
	case last.failedWithCode(CheckInhibitors{}.Name()), last.failedWithCode(ApplyEtcPolicy{}.Name()),
		last.failedWithCode(Finalize{}.Name()):
		return m.fail(cur, obs, last.Code, last.Err)
	case last.Succeeded(Finalize{}.Name()):
		cur.Finalized = true
	}
	switch {
	case cur.Finalized:
		return Decision{Next: cur, RetryAfter: m.cfg.RebootWait}
	case !stagedMatches(cur, obs):
		return m.fail(cur, obs, reason.StageFailed, "The staged deployment of "+about(cur)+" is gone before the reboot")
	case !obs.SlotHeld:
		// Only a slot holder reboots; the cordon stays for the drain that follows the slot.
		next := State{Phase: PhaseWaitingForSlot, Target: cur.Target, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: actWaiting(next, obs)}
	case obs.Node.BootID == "":
		cur.Retries++
		return Decision{Next: cur, RetryAfter: m.retryInPlace(cur.Retries)}
	}
	return stay(cur, actRebooting(cur, obs))
}

func actRebooting(cur State, obs Observed) []Effect {
	out := []Effect{CheckInhibitors{}}
	if obs.Node.Status.RebootBootID != obs.Node.BootID {
		out = append(out, RecordBootID{BootID: obs.Node.BootID})
	}
	out = append(out, working(obs, PhaseRebooting, "Rebooting into "+about(cur))...)
	out = append(out, applyEtcPolicy(cur, obs)...)
	return append(out, Finalize{Digest: cur.Target.Digest})
}

func confirmingMessage(cur State) string {
	return "Confirming the boot into " + about(cur)
}

// confirming checks the boot: the booted digest must be desired-digest (else BootedWrongImage,
// keeping the slot so the pool stops), then the Node Ready for the settle time; then it
// uncordons (if ours), releases the slot and reports Done.
func (m *Machine) confirming(cur State, obs Observed) Decision {
	if obs.Host.BootedDigest != cur.Target.Digest {
		msg := "Booted " + quoted(obs.Host.BootedDigest) + " after the reboot, not " + cur.Target.Digest
		if e := obs.Host.PreviousBootError; e != "" {
			msg += "; the previous boot's finalize failed: " + e
		}
		return m.fail(cur, obs, reason.BootedWrongImage, msg)
	}
	if eff := working(obs, PhaseConfirming, confirmingMessage(cur)); len(eff) > 0 {
		return stay(cur, eff)
	}
	if eff, done := varAfterBoot(&cur, obs); !done {
		return stay(cur, eff)
	}
	if !obs.Node.Ready {
		return Decision{Next: cur, RetryAfter: m.cfg.SlotPoll}
	}
	settle := m.cfg.SettleTime
	if st := obs.Policy.SettleTime; st != nil {
		settle = *st
	}
	if wait := settle - obs.Now.Sub(obs.Node.ReadySince); wait > 0 {
		return Decision{Next: cur, RetryAfter: wait}
	}
	next := State{Phase: PhaseDone, Target: cur.Target}
	return Decision{Next: next, Effects: concat(uncordon(obs), release(obs), reportDone(obs))}
}
