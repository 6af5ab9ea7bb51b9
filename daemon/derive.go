package daemon

import (
	"strings"

	"layerd.dev/layerd/pkg/nodestatus"
)

// Derive rebuilds the state from observations alone: the annotations (state, phase,
// desired-digest, staged-image, reboot-boot-id), the boot ID and rpm-ostree's deployments and
// active transaction. It answers "where was the update", not "what now": the handler of the
// derived phase then applies desired-image changes, retries and failures.
//
//   - Degraded stays Degraded (its transient backoff restarts from the last transition).
//   - Rebooting or Confirming with a new boot ID → Confirming (the reboot happened); with the
//     same boot ID → Rebooting (finalize again: the reboot did not happen in this boot, so it
//     is still the first).
//   - Staging with an active transaction → Staging re-attached to it (never start another);
//     with the staged deployment on desired-digest → Staged (never pull again).
//   - Staged, WaitingForSlot, Draining → the same phase.
//   - Any other Working phase → Resolving, pinned to desired-digest when one is recorded for
//     the current desired-image (killed mid-resolve, mid-verify or mid-pull).
//   - Otherwise Done, or Idle without desired-image; Done compares with the booted digest, so
//     the same image twice is a no-op.
func Derive(obs Observed) State {
	st := obs.Node.Status
	h := obs.Host
	t := Target{Image: st.ResolvedImage, Digest: st.DesiredDigest, IndexDigest: st.DesiredIndexDigest}
	switch {
	case t.Digest != "" && digestOf(st.StagedImage) == t.Digest:
		t.Pinned = st.StagedImage
	case t.Digest != "" && h.StagedDigest == t.Digest:
		t.Pinned = h.StagedImage
	}
	s := State{Target: t}
	stagedOK := t.Digest != "" && h.StagedDigest == t.Digest
	// Staged, WaitingForSlot and Draining are derived as recorded: their handlers notice a
	// staged deployment that is gone (an unplanned reboot) and start again after cleaning up.

	switch {
	case st.State == nodestatus.StateDegraded:
		s.Phase, s.Reason, s.Message = PhaseDegraded, st.Reason, st.Message
	case st.State != nodestatus.StateWorking:
		s.Phase = PhaseDone
		if st.DesiredImage == "" {
			s = State{Phase: PhaseIdle, Target: t}
		}
	case st.Phase == nodestatus.PhaseRebooting || st.Phase == nodestatus.PhaseConfirming:
		s.Phase = PhaseRebooting
		if rebooted(obs) {
			s.Phase = PhaseConfirming
		}
	case st.Phase == nodestatus.PhaseStaging && h.ActiveTxn != "":
		s.Phase, s.Txn = PhaseStaging, h.ActiveTxn
	case st.Phase == nodestatus.PhaseStaging && stagedOK, st.Phase == nodestatus.PhaseStaged:
		s.Phase = PhaseStaged
	case st.Phase == nodestatus.PhaseWaitingForSlot:
		s.Phase = PhaseWaitingForSlot
	case st.Phase == nodestatus.PhaseDraining:
		s.Phase = PhaseDraining
	case t.Digest != "" && st.DesiredImage != "" && st.ResolvedImage == st.DesiredImage:
		s.Phase, s.Pin = PhaseResolving, pinOf(t)
	default:
		s = State{Phase: PhaseResolving, Target: Target{Image: st.DesiredImage}}
	}
	return s
}

// rebooted reports whether the node booted since reboot-boot-id was recorded.
func rebooted(obs Observed) bool {
	rec := obs.Node.Status.RebootBootID
	return rec != "" && obs.Node.BootID != "" && obs.Node.BootID != rec
}

// pinOf is what a resolution is pinned to: the index digest, which a signer usually signed,
// else the manifest digest.
func pinOf(t Target) string {
	if t.IndexDigest != "" {
		return t.IndexDigest
	}
	return t.Digest
}

// digestOf returns the digest of a pinned reference ("" when it has none).
func digestOf(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	return ""
}
