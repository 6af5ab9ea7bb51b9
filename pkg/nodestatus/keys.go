// Package nodestatus is the single writer of the agent's own Node: the layerd.dev/ annotations,
// the OSImageUpToDate condition (through the nodes/status subresource) and the Events on the
// Node. Every other package reads the protocol through Read and writes it only through a Writer.
//
// docs/protocol.md describes every key, who writes it and its values; the constants below are the
// one place those keys live in code.
package nodestatus

// Prefix starts every key of the protocol.
const Prefix = "layerd.dev/"

// Annotations written by the admin (or `layerd rollout`).
const (
	// AnnotationDesiredImage is the image reference (tag or @sha256: digest) the node should run.
	AnnotationDesiredImage = Prefix + "desired-image"
	// AnnotationRetry: any new value retries a Degraded update now.
	AnnotationRetry = Prefix + "retry"
	// AnnotationApproveReboot=<digest> lets a pool with rebootPolicy Manual reboot into <digest>.
	AnnotationApproveReboot = Prefix + "approve-reboot"
)

// Annotations written only by the agent of the node, through a Writer.
const (
	AnnotationCurrentImage       = Prefix + "current-image"
	AnnotationDesiredDigest      = Prefix + "desired-digest"
	AnnotationDesiredIndexDigest = Prefix + "desired-index-digest"
	// AnnotationResolvedImage is the desired-image value desired-digest was resolved from, so a
	// restarted agent can tell a changed desired-image from a tag that merely moved.
	AnnotationResolvedImage = Prefix + "resolved-image"
	// AnnotationObservedRetry is the retry value the agent last acted on; a different retry value
	// is a new request.
	AnnotationObservedRetry  = Prefix + "observed-retry"
	AnnotationRebootBootID   = Prefix + "reboot-boot-id"
	AnnotationStagedImage    = Prefix + "staged-image"
	AnnotationState          = Prefix + "state"
	AnnotationPhase          = Prefix + "phase"
	AnnotationReason         = Prefix + "reason"
	AnnotationMessage        = Prefix + "message"
	AnnotationCordonedBy     = Prefix + "cordoned-by"
	AnnotationLastTransition = Prefix + "last-transition"
)

// Labels.
const (
	// LabelPool names a node's pool; a node without it is in DefaultPool.
	LabelPool = Prefix + "pool"
	// DefaultPool is the pool of a node without LabelPool.
	DefaultPool = "default"
	// LabelState, LabelPhase and LabelReason mirror the annotations of the same name (written
	// in the same patch by a Writer's transitions) so that `kubectl get nodes -L layerd.dev/state`
	// and label selectors such as `layerd.dev/state=Degraded` work. The annotations stay the record.
	LabelState  = AnnotationState
	LabelPhase  = AnnotationPhase
	LabelReason = AnnotationReason
)

// CordonedByLayerd is the value of AnnotationCordonedBy when the agent made the cordon.
const CordonedByLayerd = "layerd"

// ConditionOSImageUpToDate is the Node condition type the agent owns.
const ConditionOSImageUpToDate = "OSImageUpToDate"

// ReasonUpToDate is the condition and Event reason of state Done.
const ReasonUpToDate = "UpToDate"

// MaxMessageBytes bounds AnnotationMessage, the condition message and Event messages.
const MaxMessageBytes = 1024

// State is the value of AnnotationState.
type State string

const (
	StateDone     State = "Done"
	StateWorking  State = "Working"
	StateDegraded State = "Degraded"
)

// Known reports whether s is one of the protocol's states.
func (s State) Known() bool {
	switch s {
	case StateDone, StateWorking, StateDegraded:
		return true
	}
	return false
}

// Phase is the value of AnnotationPhase while Working.
type Phase string

const (
	PhaseResolving      Phase = "Resolving"
	PhaseVerifying      Phase = "Verifying"
	PhaseStaging        Phase = "Staging"
	PhaseStaged         Phase = "Staged"
	PhaseWaitingForSlot Phase = "WaitingForSlot"
	PhaseDraining       Phase = "Draining"
	PhaseRebooting      Phase = "Rebooting"
	PhaseConfirming     Phase = "Confirming"
	PhaseRollingBack    Phase = "RollingBack"
)

// Phases returns every phase in the order of one update.
func Phases() []Phase {
	return []Phase{PhaseResolving, PhaseVerifying, PhaseStaging, PhaseStaged, PhaseWaitingForSlot,
		PhaseDraining, PhaseRebooting, PhaseConfirming, PhaseRollingBack}
}

// Known reports whether p is one of the protocol's phases.
func (p Phase) Known() bool {
	for _, k := range Phases() {
		if p == k {
			return true
		}
	}
	return false
}
