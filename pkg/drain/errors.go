package drain

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// PodRef names a pod.
type PodRef struct {
	Namespace string
	Name      string
}

// String returns namespace/name.
func (p PodRef) String() string { return p.Namespace + "/" + p.Name }

// TimeoutError is returned by Drain when its Timeout (or the caller's context deadline) passed
// before every pod was gone. The node stays cordoned; lifting the cordon is the caller's call.
// Error() is one sentence of at most nodestatus.MaxMessageBytes bytes, fit for the message
// annotation and an Event.
type TimeoutError struct {
	// Node is the drained node.
	Node string
	// After is how long the drain ran: the configured timeout, or the time until the caller's
	// deadline when that came first.
	After time.Duration
	// Pods are the pods the drain was evicting that still exist (running, or terminating
	// within their grace period), sorted.
	Pods []PodRef
	// PDBs are the PodDisruptionBudgets (namespace/name) whose selectors match any of Pods,
	// sorted: the budgets that refused their eviction.
	PDBs []string
	// Unmanaged are pods without a controller that appeared on the node during the drain and
	// that it did not evict (Force is off), sorted.
	Unmanaged []PodRef
}

// Error names the blocking pods and PDBs, e.g. "drain timed out after 30s: pod default/web-1
// still running (PDB default/web-pdb)".
func (e *TimeoutError) Error() string {
	head := "drain timed out after " + roundDuration(e.After).String()
	var tail []string
	if len(e.PDBs) > 0 {
		tail = append(tail, fmt.Sprintf("(%s %s)", plural(len(e.PDBs), "PDB", "PDBs"), strings.Join(e.PDBs, ", ")))
	}
	parts := []listPart{}
	if len(e.Pods) > 0 {
		parts = append(parts, listPart{lead: plural(len(e.Pods), "pod", "pods"), items: refs(e.Pods), trail: "still running"})
	}
	if len(e.Unmanaged) > 0 {
		parts = append(parts, listPart{lead: plural(len(e.Unmanaged), "unmanaged pod", "unmanaged pods"),
			items: refs(e.Unmanaged), trail: "not evicted (force is off)"})
	}
	if len(parts) == 0 {
		return head
	}
	// The PDB list is part of the first clause: "pods a, b still running (PDB x)".
	if len(tail) > 0 {
		parts[0].trail += " " + tail[0]
	}
	return sentence(head+": ", parts)
}

// Reason returns reason.DrainTimeout.
func (e *TimeoutError) Reason() reason.Code { return reason.DrainTimeout }

// RefusedError is returned by Drain, before it evicts anything, when the node runs pods the
// options forbid draining: pods without a controller (Force off), pods with emptyDir data
// (DeleteEmptyDirData off) or DaemonSet pods (IgnoreDaemonSets off). Like kubectl drain, a
// refused drain evicts nothing. Error() is one sentence of at most nodestatus.MaxMessageBytes.
type RefusedError struct {
	// Node is the node that was to be drained.
	Node string
	// Unmanaged are running pods no controller manages, sorted.
	Unmanaged []PodRef
	// LocalStorage are running pods with emptyDir volumes, sorted.
	LocalStorage []PodRef
	// DaemonSet are running DaemonSet-managed pods, sorted.
	DaemonSet []PodRef
}

// Error names the refused pods and the option that would allow them.
func (e *RefusedError) Error() string {
	var parts []listPart
	if len(e.Unmanaged) > 0 {
		parts = append(parts, listPart{lead: plural(len(e.Unmanaged), "unmanaged pod", "unmanaged pods"),
			items: refs(e.Unmanaged), trail: "(force is off)"})
	}
	if len(e.LocalStorage) > 0 {
		parts = append(parts, listPart{lead: plural(len(e.LocalStorage), "pod", "pods"),
			items: refs(e.LocalStorage), trail: "with emptyDir data (deleteEmptyDirData is off)"})
	}
	if len(e.DaemonSet) > 0 {
		parts = append(parts, listPart{lead: plural(len(e.DaemonSet), "DaemonSet pod", "DaemonSet pods"),
			items: refs(e.DaemonSet), trail: "(ignoreDaemonSets is off)"})
	}
	if len(parts) == 0 {
		return "drain refused, nothing evicted"
	}
	return sentence("drain refused, nothing evicted: ", parts)
}

// Reason returns reason.DrainTimeout, the one drain failure code: the node could not be drained,
// and the message says why.
func (e *RefusedError) Reason() reason.Code { return reason.DrainTimeout }

// PolicyError is returned by Drain, before it evicts anything, when the drain settings of the
// node's pool policy (drainTimeout, drain) are invalid: a malformed duration or selector, an
// unknown field. The node is not drained until the policy is fixed. Error() is one sentence of
// at most nodestatus.MaxMessageBytes, naming the pool and the bad setting.
type PolicyError struct {
	// Node is the node that was to be drained.
	Node string
	// Pool is the node's pool, whose policy holds the bad setting.
	Pool string
	// Err says which setting is wrong and why.
	Err error
}

// Error names the pool and the setting.
func (e *PolicyError) Error() string {
	return nodestatus.Truncate(fmt.Sprintf("drain refused, nothing evicted: invalid drain settings in the policy of pool %s: %v",
		e.Pool, e.Err), nodestatus.MaxMessageBytes)
}

// Unwrap returns Err.
func (e *PolicyError) Unwrap() error { return e.Err }

// Reason returns reason.DrainTimeout, the one drain failure code.
func (e *PolicyError) Reason() reason.Code { return reason.DrainTimeout }

// ReasonCode implements reason.Coded.
func (e *PolicyError) ReasonCode() reason.Code { return reason.DrainTimeout }

var _ reason.Coded = (*PolicyError)(nil)

// listPart is one clause: lead, a list of items that is shortened to fit, trail.
type listPart struct {
	lead  string
	items []string
	trail string
}

// sentence joins the clauses with "; " after head, shortening the item lists ("a, b and 7
// more") so the result fits nodestatus.MaxMessageBytes.
func sentence(head string, parts []listPart) string {
	fixed := len(head)
	total := 0
	for i, p := range parts {
		if i > 0 {
			fixed += len("; ")
		}
		fixed += len(p.lead) + len(p.trail) + 2
		total += len(p.items)
	}
	budget := nodestatus.MaxMessageBytes - fixed
	var b strings.Builder
	b.WriteString(head)
	for i, p := range parts {
		if i > 0 {
			b.WriteString("; ")
		}
		// Each clause gets a share of what is left, proportional to its item count.
		share := budget * len(p.items) / max(total, 1)
		if i == len(parts)-1 {
			share = budget
		}
		list := fitList(p.items, share)
		budget -= len(list)
		total -= len(p.items)
		b.WriteString(p.lead + " " + list + " " + p.trail)
	}
	return nodestatus.Truncate(b.String(), nodestatus.MaxMessageBytes)
}

// fitList joins items with ", " in at most budget bytes, ending with " and N more" when not all
// fit. At least one item is always shown.
func fitList(items []string, budget int) string {
	var b strings.Builder
	for i, it := range items {
		sep := ""
		if i > 0 {
			sep = ", "
		}
		rest := len(items) - i - 1
		more := 0
		if rest > 0 {
			more = len(" and  more") + len(strconv.Itoa(rest))
		}
		if i > 0 && b.Len()+len(sep)+len(it)+more > budget {
			fmt.Fprintf(&b, " and %d more", len(items)-i)
			return b.String()
		}
		b.WriteString(sep + it)
	}
	return b.String()
}

func refs(pods []PodRef) []string {
	out := make([]string, len(pods))
	for i, p := range pods {
		out[i] = p.String()
	}
	return out
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// roundDuration keeps messages short: whole seconds from 1s, milliseconds below.
func roundDuration(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Round(time.Second)
	}
	return d.Round(time.Millisecond)
}
