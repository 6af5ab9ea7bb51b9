package daemon

import (
	"fmt"
	"slices"

	"layerd.dev/layerd/pkg/nodestatus"
)

// Phase is where the update state machine is. The Working phases are named like the
// layerd.dev/phase values; Idle, Done and Degraded are the rest states.
type Phase string

const (
	// PhaseIdle: no desired-image; nothing to do (reported as state Done).
	PhaseIdle           Phase = "Idle"
	PhaseResolving      Phase = Phase(nodestatus.PhaseResolving)
	PhaseVerifying      Phase = Phase(nodestatus.PhaseVerifying) // verify, then validate
	PhaseStaging        Phase = Phase(nodestatus.PhaseStaging)
	PhaseStaged         Phase = Phase(nodestatus.PhaseStaged)
	PhaseWaitingForSlot Phase = Phase(nodestatus.PhaseWaitingForSlot)
	PhaseDraining       Phase = Phase(nodestatus.PhaseDraining)
	PhaseRebooting      Phase = Phase(nodestatus.PhaseRebooting)
	PhaseConfirming     Phase = Phase(nodestatus.PhaseConfirming)
	// PhaseRollingBack is reserved for the health gate; nothing enters it yet.
	PhaseRollingBack Phase = Phase(nodestatus.PhaseRollingBack)
	// PhaseDone: the node runs the desired image.
	PhaseDone Phase = "Done"
	// PhaseDegraded: the update failed; see State.Reason.
	PhaseDegraded Phase = "Degraded"
)

// Phases returns every phase: the rest states, then the Working phases in update order.
func Phases() []Phase {
	return []Phase{PhaseIdle, PhaseDone, PhaseDegraded, PhaseResolving, PhaseVerifying, PhaseStaging,
		PhaseStaged, PhaseWaitingForSlot, PhaseDraining, PhaseRebooting, PhaseConfirming, PhaseRollingBack}
}

// Working reports whether p is a phase of a running update (reported as state Working).
func (p Phase) Working() bool {
	switch p {
	case PhaseIdle, PhaseDone, PhaseDegraded, "":
		return false
	}
	return true
}

// Transitions lists, for each phase, the phases Step may move to from it. Staying in a phase is
// always allowed and not listed. docs/fsm.md draws this table; TestDiagramMatchesTransitions
// keeps the two equal.
var Transitions = map[Phase][]Phase{
	PhaseIdle:           {PhaseResolving},
	PhaseDone:           {PhaseResolving, PhaseIdle},
	PhaseResolving:      {PhaseVerifying, PhaseDone, PhaseDegraded, PhaseIdle},
	PhaseVerifying:      {PhaseStaging, PhaseStaged, PhaseDegraded, PhaseResolving, PhaseIdle},
	PhaseStaging:        {PhaseStaged, PhaseDegraded, PhaseResolving, PhaseIdle},
	PhaseStaged:         {PhaseWaitingForSlot, PhaseResolving, PhaseIdle},
	PhaseWaitingForSlot: {PhaseDraining, PhaseResolving, PhaseIdle},
	PhaseDraining:       {PhaseRebooting, PhaseDegraded, PhaseWaitingForSlot, PhaseResolving, PhaseIdle},
	PhaseRebooting:      {PhaseConfirming, PhaseDegraded, PhaseWaitingForSlot},
	PhaseConfirming:     {PhaseDone, PhaseDegraded},
	PhaseDegraded:       {PhaseResolving, PhaseStaged, PhaseIdle},
	PhaseRollingBack:    {},
}

// TransitionError is an illegal transition: a bug in the state machine, never taken.
type TransitionError struct {
	From, To Phase
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("illegal transition %s → %s: not in daemon.Transitions (a bug in the update state machine)", e.From, e.To)
}

// CheckTransition returns a *TransitionError unless Transitions allows from → to (or to == from).
func CheckTransition(from, to Phase) error {
	if from == to {
		if _, known := Transitions[from]; known {
			return nil
		}
		return &TransitionError{From: from, To: to}
	}
	if slices.Contains(Transitions[from], to) {
		return nil
	}
	return &TransitionError{From: from, To: to}
}
