package daemon

import (
	"strings"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// Effect is one request to an owner (image, rpmostree, nodestatus, coord, drain, systemd, hostfs) that
// the agent loop executes. Each is a small value; the set is closed.
type Effect interface {
	// Name is the type's name, as Outcome.Effect and Observed.InFlight carry it.
	Name() string
	effect()
}

// Resolve asks image.Verifier.Resolve for Ref().
type Resolve struct {
	Image string
	// Pin, when set, is the digest the update already began with (the index digest of a
	// multi-arch image, else the manifest digest).
	Pin string
}

// Ref is Image pinned to Pin when Pin is set (a reference with a tag and a digest resolves by
// the digest).
func (r Resolve) Ref() string {
	if r.Pin == "" {
		return r.Image
	}
	name := r.Image
	if i := strings.LastIndex(name, "@"); i >= 0 {
		name = name[:i]
	}
	return name + "@" + r.Pin
}

// Verify asks image.Verifier.Verify about Target (signature policy).
type Verify struct{ Target Target }

// Validate asks image.Verifier.Validate about Target (os/arch, bootable); its Outcome carries
// the image size.
type Validate struct{ Target Target }

// Stage checks the sysroot's free space against Size (InsufficientDisk), then stages Pinned
// with rpmostree.Client.StageImage; LockFinalization is always true, so an unplanned reboot does
// not apply it.
type Stage struct {
	Pinned           string
	Size             int64
	LockFinalization bool
}

// AttachTxn follows the running transaction at Path until it ends (rpmostree.Client.Attach).
type AttachTxn struct{ Path string }

// CancelTxn cancels the transaction at Path: when this process follows it (a Stage or
// AttachTxn in flight), by cancelling that effect; otherwise by attaching and cancelling.
type CancelTxn struct{ Path string }

// Interrupt cancels the context of the effect in flight (Observed.InFlight).
type Interrupt struct{ Effect string }

// CleanupPending removes the staged deployment (rpm-ostree Cleanup "pending-deploy").
type CleanupPending struct{}

// ClearStaged deletes the staged-image annotation (nodestatus.Writer.ClearStaged).
type ClearStaged struct{}

// RecordDigest records what the update deploys (nodestatus.Writer.SetDesiredDigest with
// Target.Image, Target.Digest, Target.IndexDigest).
type RecordDigest struct{ Target Target }

// ClearDigest deletes desired-digest and what goes with it (ClearDesiredDigest).
type ClearDigest struct{}

// AckRetry records the retry value acted on (nodestatus.Writer.AckRetry).
type AckRetry struct{ Value string }

// AcquireSlot takes a reboot slot of Pool (coord.Slots.Acquire) for the update to Digest, unless
// the pool policy holds the node back (paused; rebootPolicy Manual without
// layerd.dev/approve-reboot=Digest): then its Outcome has Busy and Gate. A *coord.BusyError is
// not a failure either: its Outcome has Busy and Holders.
type AcquireSlot struct {
	Pool   string
	Digest string
}

// ReleaseSlot releases the node's reboot slot (coord.Slots.Held, then Release).
type ReleaseSlot struct{}

// Cordon records cordoned-by (nodestatus.Writer.SetCordonedBy), then cordons (drain). Step asks
// for it only while the Node is schedulable, so a cordon someone else made is never claimed.
type Cordon struct{}

// Uncordon lifts the cordon the agent made (drain), then deletes cordoned-by
// (ClearCordonedBy). Step asks for it only when cordoned-by is ours.
type Uncordon struct{}

// Drain evicts the node's pods (drain); a timeout fails with reason.DrainTimeout, naming the
// blocking pods and PDBs.
type Drain struct{}

// CheckInhibitors fails with reason.RebootInhibited while a login1 block inhibitor on shutdown
// is held, naming who holds it.
type CheckInhibitors struct{}

// RecordBootID records the running boot's ID just before finalizing
// (nodestatus.Writer.RecordRebootBootID).
type RecordBootID struct{ BootID string }

// Finalize unlocks the staged deployment with the deployed manifest digest and lets rpm-ostree
// reboot (rpmostree.Client.FinalizeDeployment); rpmostree.ErrRebootInitiated is a success.
type Finalize struct{ Digest string }

// PreviewHost compares the staged deployment of Digest with the booted one and the live /etc
// and /var (hostfs.PreviewEtc, PreviewVar), writes the host report file and returns the
// summary in Outcome.HostFS. A failure carries reason.HostPreviewFailed: the update goes on.
type PreviewHost struct{ Digest string }

// ApplyEtcPolicy (etcPolicy ImageWins), right before Finalize: the local /etc files that
// conflict with a default the staged deployment of Digest changes are backed up under
// /var/lib/layerd/etc-backup/<Digest>/ and the booted defaults put back, so the merge at
// finalization takes the new ones (hostfs.EtcBackupAndApply). Fails with
// reason.EtcPolicyFailed.
type ApplyEtcPolicy struct{ Digest string }

// RestoreEtc puts the local /etc files of the ImageWins backup of Digest back
// (hostfs.RestoreEtc): the update did not reach that digest (finalize failed, cancelled,
// changed, or a reboot did not boot it).
type RestoreEtc struct{ Digest string }

// CreateMissingVar (varPolicy CreateMissing), after the boot into Digest: creates what the
// booted image ships under /var that the host lacks, never changing what exists
// (hostfs.CreateMissingVar), and writes the host report file. Outcome.HostFS says what was
// created and what was not; a failure carries reason.VarContentNotApplied.
type CreateMissingVar struct{ Digest string }

// Warn records a Warning Event with Code and Message (nodestatus.Writer.Warn); the Node's
// state is untouched.
type Warn struct {
	Code    reason.Code
	Message string
}

// Report writes the node's state through the nodestatus.Writer setter it names: Done →
// SetDone(CurrentImage); Degraded → SetDegraded(Reason, Message); Working in Staged →
// SetStaged(StagedImage, Message); Working → SetWorking(Phase, Message).
type Report struct {
	State        nodestatus.State
	Phase        nodestatus.Phase
	Reason       reason.Code
	Message      string
	StagedImage  string
	CurrentImage string
	// BootedRef (Done without CurrentImage) names the ostree ref a host not booted from a
	// container image runs (SetDoneOnRef).
	BootedRef string
}

func (Resolve) Name() string          { return "Resolve" }
func (Verify) Name() string           { return "Verify" }
func (Validate) Name() string         { return "Validate" }
func (Stage) Name() string            { return "Stage" }
func (AttachTxn) Name() string        { return "AttachTxn" }
func (CancelTxn) Name() string        { return "CancelTxn" }
func (Interrupt) Name() string        { return "Interrupt" }
func (CleanupPending) Name() string   { return "CleanupPending" }
func (ClearStaged) Name() string      { return "ClearStaged" }
func (RecordDigest) Name() string     { return "RecordDigest" }
func (ClearDigest) Name() string      { return "ClearDigest" }
func (AckRetry) Name() string         { return "AckRetry" }
func (AcquireSlot) Name() string      { return "AcquireSlot" }
func (ReleaseSlot) Name() string      { return "ReleaseSlot" }
func (Cordon) Name() string           { return "Cordon" }
func (Uncordon) Name() string         { return "Uncordon" }
func (Drain) Name() string            { return "Drain" }
func (CheckInhibitors) Name() string  { return "CheckInhibitors" }
func (RecordBootID) Name() string     { return "RecordBootID" }
func (Finalize) Name() string         { return "Finalize" }
func (Report) Name() string           { return "Report" }
func (PreviewHost) Name() string      { return "PreviewHost" }
func (ApplyEtcPolicy) Name() string   { return "ApplyEtcPolicy" }
func (RestoreEtc) Name() string       { return "RestoreEtc" }
func (CreateMissingVar) Name() string { return "CreateMissingVar" }
func (Warn) Name() string             { return "Warn" }

func (Resolve) effect()          {}
func (Verify) effect()           {}
func (Validate) effect()         {}
func (Stage) effect()            {}
func (AttachTxn) effect()        {}
func (CancelTxn) effect()        {}
func (Interrupt) effect()        {}
func (CleanupPending) effect()   {}
func (ClearStaged) effect()      {}
func (RecordDigest) effect()     {}
func (ClearDigest) effect()      {}
func (AckRetry) effect()         {}
func (AcquireSlot) effect()      {}
func (ReleaseSlot) effect()      {}
func (Cordon) effect()           {}
func (Uncordon) effect()         {}
func (Drain) effect()            {}
func (CheckInhibitors) effect()  {}
func (RecordBootID) effect()     {}
func (Finalize) effect()         {}
func (Report) effect()           {}
func (PreviewHost) effect()      {}
func (ApplyEtcPolicy) effect()   {}
func (RestoreEtc) effect()       {}
func (CreateMissingVar) effect() {}
func (Warn) effect()             {}
