// Package reason holds the one set of reason codes layerd reports: in the Node annotation
// layerd.dev/reason, in the OSImageUpToDate condition, in Events and in CLI output.
//
// docs/reasons.md is generated from All (see reason_test.go); change both through this file.
package reason

import "errors"

// Code is a CamelCase reason code, stable across releases.
type Code string

// Image resolution, verification and validation (pkg/image).
const (
	InvalidReference    Code = "InvalidReference"
	ImageNotFound       Code = "ImageNotFound"
	Unauthorized        Code = "Unauthorized"
	RegistryUnavailable Code = "RegistryUnavailable"
	RegistryBlocked     Code = "RegistryBlocked"
	DigestMismatch      Code = "DigestMismatch"
	SignatureRejected   Code = "SignatureRejected"
	NotBootable         Code = "NotBootable"
	ArchMismatch        Code = "ArchMismatch"
)

// The update itself: staging, draining, rebooting, confirming.
const (
	PullFailed           Code = "PullFailed"
	StageFailed          Code = "StageFailed"
	InsufficientDisk     Code = "InsufficientDisk"
	DrainTimeout         Code = "DrainTimeout"
	RebootInhibited      Code = "RebootInhibited"
	FinalizeFailed       Code = "FinalizeFailed"
	ConflictingUpdater   Code = "ConflictingUpdater"
	BootedWrongImage     Code = "BootedWrongImage"
	HealthGateFailed     Code = "HealthGateFailed"
	RolledBack           Code = "RolledBack"
	EtcConflict          Code = "EtcConflict"
	VarContentNotApplied Code = "VarContentNotApplied"
	EtcPolicyFailed      Code = "EtcPolicyFailed"
	HostPreviewFailed    Code = "HostPreviewFailed"
)

// Info describes one code.
type Info struct {
	Code Code
	// Description is one line for docs/reasons.md and `--help` output.
	Description string
	// Permanent codes are not retried with backoff: the agent waits for a new desired-image or a
	// new layerd.dev/retry value. Transient ones are retried with capped exponential backoff.
	Permanent bool
}

// table is the single source of truth; docs/reasons.md mirrors it in this order.
var table = []Info{
	{InvalidReference, "The image reference cannot be parsed, uses another transport, or is an ambiguous short name.", true},
	{ImageNotFound, "The registry has no such repository, tag or digest.", false},
	{Unauthorized, "The registry refused the credentials (HTTP 401/403) or none were configured.", false},
	{RegistryUnavailable, "The registry could not be reached or answered 5xx/429 until the retries or the deadline ran out.", false},
	{RegistryBlocked, "The registry is marked `blocked` in registries.conf.", true},
	{DigestMismatch, "Manifest or config bytes served do not match their digest.", false},
	{SignatureRejected, "The signature policy (policy.json) does not accept the image.", true},
	{NotBootable, "The image is not a bootable OS image: no bootc/ostree label, not a single image, or absurd sizes.", true},
	{ArchMismatch, "The image has no manifest for the node's OS/architecture, or its config names another one.", true},
	{PullFailed, "rpm-ostree could not pull the image.", false},
	{StageFailed, "rpm-ostree could not stage the deployment.", false},
	{InsufficientDisk, "The sysroot has less free space than staging the image needs (3× its compressed size).", false},
	{DrainTimeout, "Evicting the node's pods did not finish in time.", false},
	{RebootInhibited, "A logind inhibitor or the reboot policy blocks the reboot.", false},
	{FinalizeFailed, "rpm-ostree could not finalize the staged deployment; it stays staged for the retry.", false},
	{ConflictingUpdater, "Another updater (a registered rpm-ostree driver, zincati, bootc's update timer, a machine-config-daemon) owns the host and the pool policy does not allow it.", false},
	{BootedWrongImage, "After the reboot the booted image is not the desired digest.", true},
	{HealthGateFailed, "Health checks failed after the reboot.", true},
	{RolledBack, "The node was rolled back to its previous image.", true},
	{EtcConflict, "Local /etc edits shadow a changed image default (warning).", false},
	{VarContentNotApplied, "The image ships /var content the host lacks; it is not applied (warning).", false},
	{EtcPolicyFailed, "etcPolicy ImageWins could not set the conflicting local /etc files aside before the reboot; they were put back.", false},
	{HostPreviewFailed, "The /etc and /var preview of the staged image could not be made; the update goes on without it (warning).", false},
}

// All returns every code in documentation order.
func All() []Info {
	out := make([]Info, len(table))
	copy(out, table)
	return out
}

// Lookup returns the Info of c.
func Lookup(c Code) (Info, bool) {
	for _, i := range table {
		if i.Code == c {
			return i, true
		}
	}
	return Info{}, false
}

// Permanent reports whether c waits for a new desired-image or retry instead of backing off.
// Unknown codes are transient.
func (c Code) Permanent() bool {
	i, _ := Lookup(c)
	return i.Permanent
}

// Description returns the one-line description of c, or "" for an unknown code.
func (c Code) Description() string {
	i, _ := Lookup(c)
	return i.Description
}

// Coded is implemented by errors that carry a reason code.
type Coded interface {
	error
	ReasonCode() Code
}

// Of returns the code of the first error in err's chain that carries one.
func Of(err error) (Code, bool) {
	var c Coded
	if errors.As(err, &c) {
		return c.ReasonCode(), true
	}
	return "", false
}
