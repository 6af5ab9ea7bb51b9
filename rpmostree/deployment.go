package rpmostree

import (
	"fmt"

	"github.com/godbus/dbus/v5"
)

// Deployment is one rpm-ostree deployment dict (reference §8), typed. Keys the daemon did not
// send are left at their zero value; keys layerd does not know are ignored.
type Deployment struct {
	ID       string // <osname>-<checksum>.<serial>
	OSName   string // the stateroot
	Checksum string // the deployed ostree commit (for containers the merge commit)
	Serial   int32
	Version  string
	// Timestamp is the commit time in seconds since the epoch (0 when unknown).
	Timestamp uint64
	Booted    bool
	Staged    bool
	Pinned    bool
	Unlocked  string // none, development, hotfix, transient
	// FinalizationLocked mirrors the legacy lock file only; it is unreliable (reference §8).
	FinalizationLocked bool
	// Origin is set for ostree origins only.
	Origin string
	// ContainerImageReference is the refspec as given, for container origins only.
	ContainerImageReference string
	// ContainerImageReferenceDigest is the imported manifest digest (best effort).
	ContainerImageReferenceDigest string
	// BaseChecksum, BaseVersion and BaseTimestamp are set only with client-side layering.
	BaseChecksum      string
	BaseVersion       string
	BaseTimestamp     uint64
	EndOfLife         string
	Packages          []string
	RequestedPackages []string
	CustomOrigin      *CustomOrigin
	// BaseCommitMeta is the commit metadata as sent (ostree.manifest-digest, …).
	BaseCommitMeta map[string]dbus.Variant
}

// CustomOrigin is the (url, description) pair of the custom-origin key.
type CustomOrigin struct {
	URL         string
	Description string
}

// IsContainer reports whether the deployment's origin is a container image.
func (d *Deployment) IsContainer() bool { return d.ContainerImageReference != "" }

// BaseCommit is the base commit: BaseChecksum, falling back to Checksum.
func (d *Deployment) BaseCommit() string {
	if d.BaseChecksum != "" {
		return d.BaseChecksum
	}
	return d.Checksum
}

// field describes one known key: its D-Bus signature and how to store it.
type field struct {
	sig   string
	store func(d *Deployment, v any)
}

func str(set func(*Deployment, string)) field {
	return field{"s", func(d *Deployment, v any) { set(d, v.(string)) }}
}

func boolean(set func(*Deployment, bool)) field {
	return field{"b", func(d *Deployment, v any) { set(d, v.(bool)) }}
}

func u64(set func(*Deployment, uint64)) field {
	return field{"t", func(d *Deployment, v any) { set(d, v.(uint64)) }}
}

func strs(set func(*Deployment, []string)) field {
	return field{"as", func(d *Deployment, v any) { set(d, append([]string(nil), v.([]string)...)) }}
}

var deploymentFields = map[string]field{
	"id":                               str(func(d *Deployment, s string) { d.ID = s }),
	"osname":                           str(func(d *Deployment, s string) { d.OSName = s }),
	"checksum":                         str(func(d *Deployment, s string) { d.Checksum = s }),
	"serial":                           {"i", func(d *Deployment, v any) { d.Serial = v.(int32) }},
	"version":                          str(func(d *Deployment, s string) { d.Version = s }),
	"timestamp":                        u64(func(d *Deployment, t uint64) { d.Timestamp = t }),
	"booted":                           boolean(func(d *Deployment, b bool) { d.Booted = b }),
	"staged":                           boolean(func(d *Deployment, b bool) { d.Staged = b }),
	"pinned":                           boolean(func(d *Deployment, b bool) { d.Pinned = b }),
	"finalization-locked":              boolean(func(d *Deployment, b bool) { d.FinalizationLocked = b }),
	"unlocked":                         str(func(d *Deployment, s string) { d.Unlocked = s }),
	"origin":                           str(func(d *Deployment, s string) { d.Origin = s }),
	"container-image-reference":        str(func(d *Deployment, s string) { d.ContainerImageReference = s }),
	"container-image-reference-digest": str(func(d *Deployment, s string) { d.ContainerImageReferenceDigest = s }),
	"base-checksum":                    str(func(d *Deployment, s string) { d.BaseChecksum = s }),
	"base-version":                     str(func(d *Deployment, s string) { d.BaseVersion = s }),
	"base-timestamp":                   u64(func(d *Deployment, t uint64) { d.BaseTimestamp = t }),
	"endoflife":                        str(func(d *Deployment, s string) { d.EndOfLife = s }),
	"packages":                         strs(func(d *Deployment, p []string) { d.Packages = p }),
	"requested-packages":               strs(func(d *Deployment, p []string) { d.RequestedPackages = p }),
	"custom-origin": {"(ss)", func(d *Deployment, v any) {
		pair := v.([]any)
		d.CustomOrigin = &CustomOrigin{URL: pair[0].(string), Description: pair[1].(string)}
	}},
	"base-commit-meta": {"a{sv}", func(d *Deployment, v any) { d.BaseCommitMeta = v.(map[string]dbus.Variant) }},
}

// requiredKeys must be present in every non-empty deployment dict.
var requiredKeys = []string{"id", "osname", "checksum"}

// ParseDeployment converts one deployment dict. Unknown keys are ignored; a known key with
// another D-Bus type, or a missing id/osname/checksum, is an error naming the key.
func ParseDeployment(dict map[string]dbus.Variant) (*Deployment, error) {
	d := &Deployment{}
	for key, v := range dict {
		f, known := deploymentFields[key]
		if !known {
			continue
		}
		if got := v.Signature().String(); got != f.sig || !valueMatches(f.sig, v.Value()) {
			return nil, fmt.Errorf("deployment key %q: D-Bus type %q, want %q", key, got, f.sig)
		}
		f.store(d, v.Value())
	}
	for _, key := range requiredKeys {
		if _, ok := dict[key]; !ok {
			return nil, fmt.Errorf("deployment dict: missing key %q", key)
		}
	}
	return d, nil
}

// valueMatches guards the type assertions in deploymentFields: a Variant's signature and its Go
// value can disagree when the Variant was built by hand (MakeVariantWithSignature).
func valueMatches(sig string, v any) bool {
	switch sig {
	case "s":
		_, ok := v.(string)
		return ok
	case "b":
		_, ok := v.(bool)
		return ok
	case "i":
		_, ok := v.(int32)
		return ok
	case "t":
		_, ok := v.(uint64)
		return ok
	case "as":
		_, ok := v.([]string)
		return ok
	case "a{sv}":
		_, ok := v.(map[string]dbus.Variant)
		return ok
	case "(ss)":
		pair, ok := v.([]any)
		if !ok || len(pair) != 2 {
			return false
		}
		_, ok0 := pair[0].(string)
		_, ok1 := pair[1].(string)
		return ok0 && ok1
	}
	return false
}

// parseOptionalDeployment treats an empty dict as "none" (BootedDeployment, RollbackDeployment).
func parseOptionalDeployment(dict map[string]dbus.Variant) (*Deployment, error) {
	if len(dict) == 0 {
		return nil, nil
	}
	return ParseDeployment(dict)
}

// ParseDeployments converts Sysroot.Deployments (aa{sv}), keeping boot order.
func ParseDeployments(dicts []map[string]dbus.Variant) ([]Deployment, error) {
	out := make([]Deployment, 0, len(dicts))
	for i, dict := range dicts {
		d, err := ParseDeployment(dict)
		if err != nil {
			return nil, fmt.Errorf("deployment %d: %w", i, err)
		}
		out = append(out, *d)
	}
	return out, nil
}
