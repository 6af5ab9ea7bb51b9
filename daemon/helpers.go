package daemon

import (
	"strings"

	"layerd.dev/layerd/pkg/nodestatus"
)

// changed reports whether desired-image differs from the image of cur, or was removed.
func changed(cur State, obs Observed) bool {
	d := obs.Node.Status.DesiredImage
	return d == "" || d != cur.Target.Image
}

// stagedMatches reports whether the staged deployment carries cur's digest.
func stagedMatches(cur State, obs Observed) bool {
	return cur.Target.Digest != "" && obs.Host.StagedDigest == cur.Target.Digest
}

// report returns r unless the Node already shows it (messages compared as the Writer stores
// them), so a waiting phase does not rewrite the Node on every step.
func report(obs Observed, r Report) []Effect {
	st := obs.Node.Status
	same := st.State == r.State && st.Phase == r.Phase && st.Reason == r.Reason
	switch {
	case r.State == nodestatus.StateDone && r.CurrentImage == "" && r.BootedRef != "":
		same = same && st.CurrentImage == "" && strings.Contains(st.Message, r.BootedRef)
	case r.State == nodestatus.StateDone:
		same = same && st.CurrentImage == r.CurrentImage
	case r.Phase == nodestatus.PhaseStaged:
		same = same && st.StagedImage == r.StagedImage && st.Message == nodestatus.Truncate(r.Message, nodestatus.MaxMessageBytes)
	default:
		same = same && st.Message == nodestatus.Truncate(r.Message, nodestatus.MaxMessageBytes)
	}
	if same {
		return nil
	}
	return []Effect{r}
}

// working reports state Working in phase p.
func working(obs Observed, p Phase, msg string) []Effect {
	return report(obs, Report{State: nodestatus.StateWorking, Phase: nodestatus.Phase(p), Message: msg})
}

// reportDone reports state Done on the booted image.
func reportDone(obs Observed) []Effect {
	return report(obs, Report{State: nodestatus.StateDone, CurrentImage: obs.Host.BootedImage, BootedRef: obs.Host.BootedRef})
}

// uncordon lifts the cordon only when the agent made it.
func uncordon(obs Observed) []Effect {
	if obs.Node.Status.CordonedByUs() {
		return []Effect{Uncordon{}}
	}
	return nil
}

func release(obs Observed) []Effect {
	if obs.SlotHeld {
		return []Effect{ReleaseSlot{}}
	}
	return nil
}

// dropStaged removes a staged deployment of ours (cur's digest, or one recorded in
// staged-image or desired-digest) and the staged-image annotation. A deployment another updater
// staged is left alone.
func dropStaged(cur State, obs Observed) []Effect {
	st, h := obs.Node.Status, obs.Host
	var out []Effect
	if d := h.StagedDigest; d != "" && (d == cur.Target.Digest || d == digestOf(st.StagedImage) || d == st.DesiredDigest) {
		out = append(out, CleanupPending{})
	}
	if st.StagedImage != "" {
		out = append(out, ClearStaged{})
	}
	return out
}

// tidyAll leaves nothing of an update behind: no cordon of ours, no slot, nothing staged.
func tidyAll(cur State, obs Observed) []Effect {
	return concat(uncordon(obs), release(obs), dropStaged(cur, obs))
}

// rest is what Idle keeps true: desired-digest cleared and state Done reported.
func rest(obs Observed) []Effect {
	var out []Effect
	if st := obs.Node.Status; st.DesiredDigest != "" || st.ResolvedImage != "" || st.DesiredIndexDigest != "" {
		out = append(out, ClearDigest{})
	}
	return append(out, reportDone(obs)...)
}

// startOver stops the update of cur at this safe point (DESIGN §2: cleanup pending-deploy,
// uncordon if ours, release the slot) and starts the one desired-image asks for, or goes Idle
// when it was removed.
func (m *Machine) startOver(cur State, obs Observed) Decision {
	tidy := tidyAll(cur, obs)
	desired := obs.Node.Status.DesiredImage
	if desired == "" {
		return Decision{Next: State{Phase: PhaseIdle}, Effects: concat(tidy, rest(obs))}
	}
	next := State{Phase: PhaseResolving, Target: Target{Image: desired}}
	return Decision{Next: next, Effects: concat(tidy, actResolving(next, obs))}
}

// restartPinned begins cur's update again from Resolving, pinned to its recorded digest: the
// staged deployment it needs is gone (an unplanned reboot, an admin's cleanup) or the booted
// image drifted from it.
func (m *Machine) restartPinned(cur State, obs Observed) Decision {
	if cur.Target.Digest == "" {
		return m.startOver(cur, obs)
	}
	t := Target{Image: cur.Target.Image, Digest: cur.Target.Digest, IndexDigest: cur.Target.IndexDigest}
	next := State{Phase: PhaseResolving, Target: t, Pin: pinOf(t), Attempt: cur.Attempt}
	return Decision{Next: next, Effects: concat(tidyAll(cur, obs), actResolving(next, obs))}
}

// about names cur's image for messages the same way before and after a restart.
func about(cur State) string {
	if cur.Target.Digest == "" {
		return cur.Target.Image
	}
	return cur.Target.Image + " (" + cur.Target.Digest + ")"
}
