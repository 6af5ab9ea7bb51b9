package daemon

import "layerd.dev/layerd/pkg/reason"

// The handlers of the rest states and of the phases before the staged deployment exists:
// Idle, Done, Resolving, Verifying, Staging. A change of desired-image in any of them starts
// over at once (nothing staged, no cordon, no slot yet).

func (m *Machine) idle(cur State, obs Observed) Decision {
	if obs.Node.Status.DesiredImage != "" {
		return m.startOver(cur, obs)
	}
	return stay(cur, tidyAll(cur, obs), rest(obs))
}

// done keeps the end state of an update (no slot, no cordon of ours) and starts the next one
// when desired-image changes. The same desired-image again is a no-op; a booted digest that
// drifted from desired-digest is converged back to it.
func (m *Machine) done(cur State, obs Observed) Decision {
	switch {
	case changed(cur, obs):
		return m.startOver(cur, obs)
	case cur.Target.Digest != "" && obs.Host.BootedDigest != cur.Target.Digest:
		return m.restartPinned(cur, obs)
	}
	return stay(cur, tidyAll(cur, obs), reportDone(obs))
}

func (m *Machine) resolving(cur State, obs Observed) Decision {
	if changed(cur, obs) {
		return m.startOver(cur, obs)
	}
	last := obs.Last
	switch {
	case last.failedWithCode(Resolve{}.Name()):
		return m.fail(cur, obs, last.Code, last.Err)
	case last.Succeeded(Resolve{}.Name()) && last.Target != nil:
		t := *last.Target
		t.Image = cur.Target.Image
		if cur.Pin != "" && cur.Target.Digest != "" && t.Digest != cur.Target.Digest {
			return m.fail(cur, obs, reason.DigestMismatch, "resolving "+Resolve{Image: cur.Target.Image, Pin: cur.Pin}.Ref()+
				" gave digest "+t.Digest+", but the update began with "+cur.Target.Digest)
		}
		if t.Digest == obs.Host.BootedDigest {
			// The node already runs this image: no transaction, no reboot.
			next := State{Phase: PhaseDone, Target: t}
			return Decision{Next: next, Effects: concat(tidyAll(cur, obs), recordDigest(t, obs), reportDone(obs))}
		}
		next := State{Phase: PhaseVerifying, Target: t, Attempt: cur.Attempt}
		return Decision{Next: next, Effects: actVerifying(next, obs)}
	}
	return stay(cur, actResolving(cur, obs))
}

func actResolving(cur State, obs Observed) []Effect {
	r := Resolve{Image: cur.Target.Image, Pin: cur.Pin}
	return concat(working(obs, PhaseResolving, "Resolving "+r.Ref()), []Effect{r})
}

func recordDigest(t Target, obs Observed) []Effect {
	st := obs.Node.Status
	if st.DesiredDigest == t.Digest && st.ResolvedImage == t.Image && st.DesiredIndexDigest == t.IndexDigest {
		return nil
	}
	return []Effect{RecordDigest{Target: t}}
}

// verifying runs Verify, then Validate, on the pinned image.
func (m *Machine) verifying(cur State, obs Observed) Decision {
	if changed(cur, obs) {
		return m.startOver(cur, obs)
	}
	last := obs.Last
	switch {
	case last.failedWithCode(Verify{}.Name()), last.failedWithCode(Validate{}.Name()):
		return m.fail(cur, obs, last.Code, last.Err)
	case last.Succeeded(Verify{}.Name()):
		cur.Verified = true
	case last.Succeeded(Validate{}.Name()) && cur.Verified:
		t := cur.Target
		if last.Size > 0 {
			t.Size = last.Size
		}
		next := State{Phase: PhaseStaging, Target: t, Attempt: cur.Attempt}
		if stagedMatches(next, obs) {
			// Staged before (a change back, a retry): never pull again.
			return m.toStaged(next, obs)
		}
		return Decision{Next: next, Effects: actStaging(next, obs)}
	}
	return stay(cur, actVerifying(cur, obs))
}

func actVerifying(cur State, obs Observed) []Effect {
	var check Effect = Verify{Target: cur.Target}
	if cur.Verified {
		check = Validate{Target: cur.Target}
	}
	return concat(recordDigest(cur.Target, obs), working(obs, PhaseVerifying, "Verifying "+about(cur)),
		[]Effect{check})
}

// staging stages the pinned image, or follows the transaction already running (a restarted
// agent re-attaches instead of starting another). A change of desired-image cancels the
// transaction first, then starts over.
func (m *Machine) staging(cur State, obs Observed) Decision {
	h := obs.Host
	if changed(cur, obs) {
		if h.ActiveTxn != "" {
			return stay(cur, []Effect{CancelTxn{Path: h.ActiveTxn}})
		}
		return m.startOver(cur, obs)
	}
	last := obs.Last
	switch {
	case last.failedWithCode(Stage{}.Name()), last.failedWithCode(AttachTxn{}.Name()):
		return m.fail(cur, obs, last.Code, last.Err)
	case last.Succeeded(Stage{}.Name()) || last.Succeeded(AttachTxn{}.Name()):
		cur.Txn = ""
		if stagedMatches(cur, obs) {
			return m.toStaged(cur, obs)
		}
		if last.Effect == (Stage{}).Name() {
			return m.fail(cur, obs, reason.StageFailed, "rpm-ostree reported "+cur.Target.Pinned+
				" staged, but the staged deployment has digest "+quoted(h.StagedDigest))
		}
	}
	if h.ActiveTxn == "" && stagedMatches(cur, obs) {
		return m.toStaged(cur, obs) // never pull again
	}
	if h.ActiveTxn == "" && cur.Target.Pinned == "" {
		// Re-derived after a restart, the transaction has ended without staging the image and
		// the pinned reference is not known: resolve it again, pinned.
		return m.restartPinned(cur, obs)
	}
	return stay(cur, actStaging(cur, obs))
}

func actStaging(cur State, obs Observed) []Effect {
	var e Effect = Stage{Pinned: cur.Target.Pinned, Size: cur.Target.Size, LockFinalization: true}
	if obs.Host.ActiveTxn != "" {
		e = AttachTxn{Path: obs.Host.ActiveTxn}
	}
	return concat(working(obs, PhaseStaging, "Staging "+about(cur)), []Effect{e})
}

func (m *Machine) toStaged(cur State, obs Observed) Decision {
	t := cur.Target
	t.Pinned = stagedRef(cur, obs)
	next := State{Phase: PhaseStaged, Target: t, Attempt: cur.Attempt}
	return Decision{Next: next, Effects: actStaged(next, obs)}
}

// stagedRef is the pinned reference of cur's image: as resolved, as rpm-ostree reports the
// staged deployment, or built from the recorded digest.
func stagedRef(cur State, obs Observed) string {
	switch {
	case cur.Target.Pinned != "":
		return cur.Target.Pinned
	case obs.Host.StagedImage != "" && stagedMatches(cur, obs):
		return obs.Host.StagedImage
	}
	return Resolve{Image: cur.Target.Image, Pin: cur.Target.Digest}.Ref()
}

func quoted(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
