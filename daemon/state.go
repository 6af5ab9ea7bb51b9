package daemon

import (
	"context"
	"errors"
	"strings"
	"time"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// State is the state machine's state: a phase and the data the phase carries. The zero State
// means "not derived yet"; Step derives it from the first Observed.
type State struct {
	Phase Phase
	// Target is the image of the update in progress (Done: the image the node runs).
	Target Target
	// Pin (Resolving) pins the resolution to this digest: the update already began with it, so a
	// tag that moved since does not change it.
	Pin string
	// Txn (Staging) is the address of a transaction to re-attach to instead of staging again.
	Txn string
	// Verified (Verifying) is set once Verify accepted the image; Validate runs next.
	Verified bool
	// Holders (WaitingForSlot) names the nodes holding every slot of the pool.
	Holders []string
	// Gate (WaitingForSlot) says why no slot is taken although one may be free: the pool is
	// paused, or its rebootPolicy Manual waits for the admin's approval.
	Gate string
	// Finalized (Rebooting) is set once FinalizeDeployment returned: the reboot is under way.
	Finalized bool
	// Preview (Staged) is what PreviewHost found in /etc and /var; nil until it ran.
	Preview *HostFSSummary
	// Warned (Staged) is set once the preview's Warning Events were asked for.
	Warned bool
	// VarCreated (Confirming) is set once CreateMissingVar ran (varPolicy CreateMissing).
	VarCreated bool
	// Reason and Message (Degraded) say why the update failed.
	Reason  reason.Code
	Message string
	// Attempt counts the failures of this update (the backoff exponent); reset by a new
	// desired-image, a retry or Done.
	Attempt int
	// RetryAt (Degraded with a transient reason) is when the update is retried.
	RetryAt time.Time
	// Retries counts infrastructure errors (an Outcome without a reason code) retried in place.
	Retries int
}

// Target is an image reference pinned to the digest an update deploys.
type Target struct {
	// Image is the desired-image value it was resolved from.
	Image string
	// Repo is registry/repository ("" when re-derived after a restart).
	Repo string
	// Pinned is Repo@Digest: what is verified, validated and staged ("" when unknown).
	Pinned string
	// Digest is the per-arch manifest digest: what is deployed and what rpm-ostree reports.
	Digest string
	// IndexDigest is the manifest list / OCI index digest of a multi-arch image, else "".
	IndexDigest string
	// Size is the image's size in bytes as Validate read it (0 when unknown).
	Size int64
}

// Observed is what the agent loop gathered from the owners before a Step.
type Observed struct {
	// Now is the agent clock's time.
	Now time.Time
	// Node is the agent's own Node.
	Node NodeView
	// Host is rpm-ostree's view of the host.
	Host HostView
	// SlotHeld is true while this node holds a reboot slot of its pool (coord.Slots.Held).
	SlotHeld bool
	// Policy is the pool's etcPolicy and varPolicy (read while the Node is Working or Degraded).
	Policy Policy
	// InFlight names the effect still running (Effect.Name), "" when none.
	InFlight string
	// Last is the outcome of the effects of the previous Step (zero when none ran).
	Last Outcome
}

// NodeView is the agent's own Node.
type NodeView struct {
	// Status is the protocol as nodestatus.Read parsed it from the annotations.
	Status nodestatus.Status
	// Ready is the Node's Ready condition; ReadySince its lastTransitionTime.
	Ready      bool
	ReadySince time.Time
	// Unschedulable is spec.unschedulable (cordoned, by anyone).
	Unschedulable bool
	// BootID is the running boot's ID (status.nodeInfo.bootID or /proc/sys/kernel/random/boot_id).
	BootID string
}

// HostView is rpm-ostree's view of the host (rpmostree.Client.Status).
type HostView struct {
	// BootedDigest is the booted deployment's container-image-reference-digest ("" when the
	// booted deployment is not from a container image).
	BootedDigest string
	// BootedImage is the booted image pinned as registry/repo@sha256:… ("" likewise).
	BootedImage string
	// BootedRef names what a booted deployment that is not from a container image runs: its
	// ostree origin refspec and commit ("" for a container image).
	BootedRef string
	// StagedDigest and StagedImage describe the staged deployment ("" when none).
	StagedDigest string
	StagedImage  string
	// ActiveTxn is the active transaction's address (ActiveTransactionPath; "" when idle).
	ActiveTxn string
	// PreviousBootError is the previous boot's finalize error from the journal ("" when none).
	PreviousBootError string
	// EtcBackups are the digests of etcPolicy ImageWins backups made from the booted
	// deployment and not restored: /etc holds the booted defaults instead of the admin's
	// versions until they are finalized into that digest or put back (RestoreEtc).
	EtcBackups []string
}

// Policy is the pool's etcPolicy and varPolicy (hostfs.PolicyFromRaw; docs/hostfs.md).
type Policy struct {
	// EtcImageWins (etcPolicy ImageWins): right before finalizing, local /etc edits that
	// conflict with a changed default are set aside so the new default applies. Otherwise
	// (Keep) they are only reported.
	EtcImageWins bool
	// VarCreateMissing (varPolicy CreateMissing): after the boot, what the image ships under
	// /var that the host lacks is created. Otherwise (Report) it is only reported.
	VarCreateMissing bool
	// SettleTime, when set, overrides Config.SettleTime for the pool (settleTime).
	SettleTime *time.Duration
	// Problem says why a value was not understood (the default was used instead); "" when none.
	Problem string
}

// HostFSSummary is what PreviewHost found in the host's /etc and /var, or what
// CreateMissingVar did, as counts and the first paths (hostfs.Summary).
type HostFSSummary struct {
	// Err is why the preview could not be made ("" when it was).
	Err string
	// EtcConflicts counts local /etc edits that shadow a default the staged image changes.
	EtcConflicts     int
	EtcConflictPaths []string
	// VarNotApplied counts what the image ships under /var that the host lacks or has
	// otherwise (PreviewHost), or still does not have as shipped (CreateMissingVar).
	VarNotApplied int
	VarPaths      []string
	// VarCreated counts the paths CreateMissingVar created.
	VarCreated int
	// Limit is the walk limit a preview stopped at ("" when it looked at everything).
	Limit string
}

// Outcome is how the effects of the previous Step ended: the last effect executed, which is
// the one that failed when one did.
type Outcome struct {
	// Effect is the Name of the effect ("" when no effect ran).
	Effect string
	// Err is the failure as one sentence ("" on success).
	Err string
	// Code is the failure's reason code. A failure without one is an infrastructure error (the
	// API server, D-Bus): the phase retries it in place with backoff instead of degrading.
	Code reason.Code
	// Interrupted is set when the effect was cancelled by Interrupt or CancelTxn.
	Interrupted bool
	// Target is what Resolve resolved to.
	Target *Target
	// Size is the image size Validate read, in bytes.
	Size int64
	// Busy and Holders (AcquireSlot): every slot of the pool is held, by Holders. Not a failure.
	Busy    bool
	Holders []string
	// Gate (AcquireSlot, with Busy): the pool policy holds the node back (State.Gate).
	Gate string
	// HostFS is what PreviewHost found or CreateMissingVar did.
	HostFS *HostFSSummary
}

// Failed reports whether the effect failed (an interruption is not a failure).
func (o Outcome) Failed() bool { return o.Err != "" && !o.Interrupted }

// Succeeded reports whether the named effect ran and succeeded.
func (o Outcome) Succeeded(effect string) bool {
	return o.Effect == effect && o.Err == "" && !o.Interrupted && !o.Busy
}

// failedWithCode reports whether the named effect failed with a reason code.
func (o Outcome) failedWithCode(effect string) bool {
	return o.Effect == effect && o.Failed() && o.Code != ""
}

// OutcomeOf is the Outcome of e ending with err: success when err is nil; Interrupted when err
// is (or wraps) context.Canceled; else a failure carrying the first reason code in err's chain
// (reason.Of), or none for an infrastructure error.
func OutcomeOf(e Effect, err error) Outcome {
	o := Outcome{Effect: e.Name()}
	if err == nil {
		return o
	}
	o.Err = oneLine(err.Error())
	if errors.Is(err, context.Canceled) {
		o.Interrupted = true
		return o
	}
	if c, ok := reason.Of(err); ok {
		o.Code = c
	}
	return o
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
