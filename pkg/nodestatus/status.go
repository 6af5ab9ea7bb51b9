package nodestatus

import (
	"time"

	corev1 "k8s.io/api/core/v1"

	"layerd.dev/layerd/pkg/reason"
)

// Status is the protocol as read from a Node: what the admin asked for and what the agent last
// recorded. It is what a restarted agent re-derives its state from.
type Status struct {
	// Written by the admin.
	DesiredImage  string
	Retry         string
	ApproveReboot string

	// Written by the agent.
	State              State
	Phase              Phase
	Reason             reason.Code
	Message            string
	CurrentImage       string
	DesiredDigest      string
	DesiredIndexDigest string
	ResolvedImage      string
	ObservedRetry      string
	StagedImage        string
	RebootBootID       string
	CordonedBy         string
	// LastTransition is zero when the annotation is absent or not RFC 3339.
	LastTransition time.Time

	// Pool is the node's LabelPool, DefaultPool when unset.
	Pool string
}

// Read parses the protocol from node. Unknown State or Phase values are returned as found
// (check Known). A nil node reads as the empty Status in DefaultPool.
func Read(node *corev1.Node) Status {
	if node == nil {
		return Status{Pool: DefaultPool}
	}
	a := node.Annotations
	s := Status{
		DesiredImage:       a[AnnotationDesiredImage],
		Retry:              a[AnnotationRetry],
		ApproveReboot:      a[AnnotationApproveReboot],
		State:              State(a[AnnotationState]),
		Phase:              Phase(a[AnnotationPhase]),
		Reason:             reason.Code(a[AnnotationReason]),
		Message:            a[AnnotationMessage],
		CurrentImage:       a[AnnotationCurrentImage],
		DesiredDigest:      a[AnnotationDesiredDigest],
		DesiredIndexDigest: a[AnnotationDesiredIndexDigest],
		ResolvedImage:      a[AnnotationResolvedImage],
		ObservedRetry:      a[AnnotationObservedRetry],
		StagedImage:        a[AnnotationStagedImage],
		RebootBootID:       a[AnnotationRebootBootID],
		CordonedBy:         a[AnnotationCordonedBy],
		Pool:               PoolOf(node),
	}
	if v := a[AnnotationLastTransition]; v != "" {
		if t, err := time.Parse(time.RFC3339, v); err == nil {
			s.LastTransition = t
		}
	}
	return s
}

// PoolOf returns node's pool: its LabelPool, or DefaultPool when the label is absent or empty.
func PoolOf(node *corev1.Node) string {
	if node != nil {
		if p := node.Labels[LabelPool]; p != "" {
			return p
		}
	}
	return DefaultPool
}

// CordonedByUs reports whether the agent made the node's cordon (and may lift it).
func (s Status) CordonedByUs() bool { return s.CordonedBy == CordonedByLayerd }

// RetryRequested reports whether the admin set a retry value the agent has not acted on yet.
func (s Status) RetryRequested() bool { return s.Retry != "" && s.Retry != s.ObservedRetry }

// DesiredChanged reports whether desired-image differs from the reference desired-digest was
// resolved from (including a removed desired-image while a digest is recorded).
func (s Status) DesiredChanged() bool {
	if s.DesiredDigest == "" && s.ResolvedImage == "" {
		return s.DesiredImage != ""
	}
	return s.DesiredImage != s.ResolvedImage
}

// Condition returns node's OSImageUpToDate condition, or nil.
func Condition(node *corev1.Node) *corev1.NodeCondition {
	if node == nil {
		return nil
	}
	for i := range node.Status.Conditions {
		if node.Status.Conditions[i].Type == ConditionOSImageUpToDate {
			return &node.Status.Conditions[i]
		}
	}
	return nil
}
