package daemon_test

import (
	"fmt"
	"slices"
	"strings"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// apply is what the owners do with one effect, and the outcome the agent loop would build.
func (w *world) apply(e daemon.Effect) daemon.Outcome {
	w.t.Helper()
	w.effects = append(w.effects, describe([]daemon.Effect{e}))
	if out, ok := w.fail[e.Name()]; ok {
		return out
	}
	st, h, node := &w.obs.Node.Status, &w.obs.Host, &w.obs.Node
	ok := daemon.Outcome{Effect: e.Name()}
	switch e := e.(type) {
	case daemon.Report:
		w.report(e)
	case daemon.RecordDigest:
		st.DesiredDigest, st.DesiredIndexDigest, st.ResolvedImage = e.Target.Digest, e.Target.IndexDigest, e.Target.Image
	case daemon.ClearDigest:
		st.DesiredDigest, st.DesiredIndexDigest, st.ResolvedImage = "", "", ""
	case daemon.ClearStaged:
		st.StagedImage = ""
	case daemon.AckRetry:
		st.ObservedRetry = e.Value
	case daemon.Resolve:
		tg, found := w.images[e.Image]
		if e.Pin != "" {
			tg, found = w.byDigest[e.Pin]
		}
		if !found {
			return daemon.Outcome{Effect: e.Name(), Err: "no such image " + e.Ref(), Code: reason.ImageNotFound}
		}
		ok.Target = &tg
	case daemon.Verify, daemon.CheckInhibitors, daemon.Interrupt:
	case daemon.Validate:
		ok.Size = 1 << 30
	case daemon.Stage:
		if !e.LockFinalization {
			w.t.Errorf("staged %s without lock-finalization", e.Pinned)
		}
		if h.StagedDigest != "" && h.StagedDigest == digestOf(e.Pinned) {
			w.repulls++
			break
		}
		w.pulls++
		if w.stageCrashes {
			w.stageCrashes = false
			h.ActiveTxn = txnPath
			w.txnStages(e.Pinned)
			w.crashed = true
			break
		}
		h.StagedDigest, h.StagedImage = digestOf(e.Pinned), e.Pinned
	case daemon.AttachTxn:
		if e.Path != h.ActiveTxn {
			w.t.Errorf("attached to %s, active transaction is %q", e.Path, h.ActiveTxn)
		}
		w.finishTxn()
	case daemon.CancelTxn:
		h.ActiveTxn, w.txn = "", ""
	case daemon.CleanupPending:
		h.StagedDigest, h.StagedImage = "", ""
	case daemon.AcquireSlot:
		if len(w.busy) > 0 {
			return daemon.Outcome{Effect: e.Name(), Busy: true, Holders: w.busy}
		}
		w.obs.SlotHeld = true
	case daemon.ReleaseSlot:
		if !w.obs.SlotHeld {
			w.t.Errorf("released a slot not held")
		}
		w.obs.SlotHeld = false
	case daemon.Cordon:
		if node.Unschedulable {
			w.t.Errorf("cordoned a node already unschedulable (a cordon not ours would be claimed)")
		}
		w.mustHoldSlot(e)
		st.CordonedBy, node.Unschedulable = nodestatus.CordonedByLayerd, true
	case daemon.Uncordon:
		if !st.CordonedByUs() {
			w.t.Errorf("lifted a cordon layerd did not make")
		}
		st.CordonedBy, node.Unschedulable = "", false
	case daemon.Drain:
		w.mustHoldSlot(e)
		if !node.Unschedulable {
			w.t.Errorf("drained a schedulable node")
		}
	case daemon.RecordBootID:
		st.RebootBootID = e.BootID
	case daemon.Finalize:
		w.mustHoldSlot(e)
		if st.RebootBootID != node.BootID || st.Phase != nodestatus.PhaseRebooting {
			w.t.Errorf("finalized without recording boot ID and phase Rebooting first")
		}
		if h.StagedDigest != e.Digest {
			w.t.Errorf("finalized %s, staged is %q", e.Digest, h.StagedDigest)
		}
		w.reboot()
	case daemon.PreviewHost:
		if h.StagedDigest != e.Digest {
			w.t.Errorf("previewed %s, staged is %q", e.Digest, h.StagedDigest)
		}
		p := w.preview
		ok.HostFS = &p
	case daemon.Warn:
		w.warnings = append(w.warnings, string(e.Code)+": "+e.Message)
	case daemon.ApplyEtcPolicy:
		w.mustHoldSlot(e)
		if h.StagedDigest != e.Digest || st.Phase != nodestatus.PhaseRebooting {
			w.t.Errorf("applied ImageWins for %s in phase %s, staged %q", e.Digest, st.Phase, h.StagedDigest)
		}
		if !slices.Contains(h.EtcBackups, e.Digest) {
			h.EtcBackups = append(h.EtcBackups, e.Digest)
		}
		w.etcLocal = false
	case daemon.RestoreEtc:
		if !slices.Contains(h.EtcBackups, e.Digest) {
			w.t.Errorf("restored %s, backups are %v", e.Digest, h.EtcBackups)
		}
		h.EtcBackups = slices.DeleteFunc(h.EtcBackups, func(d string) bool { return d == e.Digest })
		w.etcLocal = true
	case daemon.CreateMissingVar:
		if h.BootedDigest != e.Digest {
			w.t.Errorf("created /var content of %s, booted is %s", e.Digest, h.BootedDigest)
		}
		c := w.created
		ok.HostFS = &c
	default:
		w.t.Fatalf("world cannot apply %T", e)
	}
	return ok
}

func (w *world) txnStages(pinned string) { w.txn = pinned }

// finishTxn ends the transaction running in rpm-ostreed, which stages its image.
func (w *world) finishTxn() {
	h := &w.obs.Host
	if w.txn != "" {
		h.StagedDigest, h.StagedImage = digestOf(w.txn), w.txn
	}
	h.ActiveTxn, w.txn = "", ""
}

func (w *world) mustHoldSlot(e daemon.Effect) {
	if !w.obs.SlotHeld {
		w.t.Errorf("%s without holding a reboot slot", e.Name())
	}
}

// reboot is rpm-ostree finalizing and the machine booting: the agent dies, the Node goes
// through NotReady and comes back with a new boot ID.
func (w *world) reboot() {
	h, node := &w.obs.Host, &w.obs.Node
	w.reboots++
	w.bootN++
	node.BootID = fmt.Sprintf("boot-%d", w.bootN)
	if w.wrongBoot {
		w.wrongBoot = false
		h.PreviousBootError = "error: Finalizing deployment: bwrap: Operation not permitted"
	} else {
		h.BootedDigest, h.BootedImage = h.StagedDigest, h.StagedImage
		// The backups were made from the deployment booted before: they are the record of
		// the admin's versions now, no longer ones to put back.
		w.backedUp = append(w.backedUp, h.EtcBackups...)
		h.EtcBackups = nil
	}
	h.StagedDigest, h.StagedImage, h.ActiveTxn = "", "", ""
	node.Ready, node.ReadySince = true, w.obs.Now.Add(5*60e9)
	w.obs.Now = node.ReadySince
	w.crashed = true
}

// report applies a Report the way the nodestatus.Writer setters do.
func (w *world) report(r daemon.Report) {
	st := &w.obs.Node.Status
	before := fmt.Sprintf("%s/%s/%s", st.State, st.Phase, st.Reason)
	st.State, st.Phase, st.Reason = r.State, r.Phase, r.Reason
	st.Message = nodestatus.Truncate(r.Message, nodestatus.MaxMessageBytes)
	switch {
	case r.State == nodestatus.StateDone:
		st.Phase, st.Reason, st.StagedImage, st.RebootBootID = "", "", "", ""
		st.CurrentImage, st.Message = r.CurrentImage, "Running "+r.CurrentImage
	case r.State == nodestatus.StateDegraded:
		st.Phase = ""
		if r.Reason == "" {
			w.t.Errorf("Degraded reported without a reason")
		}
	case r.Phase == nodestatus.PhaseStaged:
		if r.StagedImage == "" {
			w.t.Errorf("Staged reported without staged image")
		}
		st.StagedImage = r.StagedImage
	}
	if after := fmt.Sprintf("%s/%s/%s", st.State, st.Phase, st.Reason); after != before {
		st.LastTransition = w.obs.Now
		w.reported = append(w.reported, strings.TrimRight(after, "/"))
	}
}

func digestOf(ref string) string {
	if i := strings.LastIndex(ref, "@"); i >= 0 {
		return ref[i+1:]
	}
	return ""
}
