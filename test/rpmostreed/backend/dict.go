package backend

import (
	"github.com/godbus/dbus/v5"
)

// Commit metadata keys ostree-ext writes on an imported container image.
const (
	metaManifestDigest = "ostree.manifest-digest"
	metaManifest       = "ostree.manifest"
	metaImageConfig    = "ostree.container.image-config"
	metaVersion        = "version"
	metaEndOfLife      = "ostree.endoflife"
)

// replacementPair is one a(vv) element of base-local-replacements.
type replacementPair struct {
	A, B dbus.Variant
}

// customOrigin is the (ss) of custom-origin.
type customOrigin struct {
	URL, Description string
}

// dict renders d as rpm-ostree's deployment a{sv} (reference §8): the keys
// rpm-ostree always sends, with its exact types, plus the conditional ones
// that apply to a container or plain ostree origin without package layering.
func (d deployment) dict() map[string]dbus.Variant {
	m := map[string]dbus.Variant{
		"id":                       dbus.MakeVariant(d.id()),
		"osname":                   dbus.MakeVariant(d.OSName),
		"checksum":                 dbus.MakeVariant(d.Checksum),
		"serial":                   dbus.MakeVariant(int32(d.Serial)),
		"booted":                   dbus.MakeVariant(d.Booted),
		"staged":                   dbus.MakeVariant(d.Staged),
		"pinned":                   dbus.MakeVariant(d.Origin.Pinned),
		"unlocked":                 dbus.MakeVariant(d.Unlocked),
		"base-commit-meta":         dbus.MakeVariant(copyMeta(d.Commit.Metadata)),
		"packages":                 dbus.MakeVariant([]string{}),
		"base-removals":            dbus.MakeVariant([]dbus.Variant{}),
		"base-local-replacements":  dbus.MakeVariant([]replacementPair{}),
		"base-remote-replacements": dbus.MakeVariant(map[string]dbus.Variant{}),
		"regenerate-initramfs":     dbus.MakeVariant(false),
	}
	if d.Staged && d.LegacyLocked {
		m["finalization-locked"] = dbus.MakeVariant(true)
	}
	if d.Commit.Timestamp > 0 {
		m["timestamp"] = dbus.MakeVariant(d.Commit.Timestamp)
	}
	if v := d.Commit.metaString(metaVersion); v != "" {
		m["version"] = dbus.MakeVariant(v)
	}
	if eol := d.Commit.metaString(metaEndOfLife); eol != "" {
		m["endoflife"] = dbus.MakeVariant(eol)
	}
	o := d.Origin
	hasOrigin := o.ContainerImageReference != "" || o.Refspec != ""
	if hasOrigin {
		for _, k := range []string{"requested-packages", "requested-local-packages",
			"requested-local-fileoverride-packages", "requested-base-removals",
			"requested-base-local-replacements"} {
			m[k] = dbus.MakeVariant([]string{})
		}
	}
	switch {
	case o.ContainerImageReference != "":
		m["container-image-reference"] = dbus.MakeVariant(o.ContainerImageReference)
		dg := d.Commit.metaString(metaManifestDigest)
		if override := o.Extra["origin"]["override-commit"]; override != "" {
			dg = override
		}
		if dg != "" {
			m["container-image-reference-digest"] = dbus.MakeVariant(dg)
		}
	case o.Refspec != "":
		m["origin"] = dbus.MakeVariant(o.Refspec)
	}
	if url := o.Extra["origin"]["custom-url"]; url != "" {
		m["custom-origin"] = dbus.MakeVariant(customOrigin{URL: url, Description: o.Extra["origin"]["custom-description"]})
	}
	return m
}

func copyMeta(in map[string]dbus.Variant) map[string]dbus.Variant {
	out := make(map[string]dbus.Variant, len(in))
	for k, v := range in {
		out[k] = v
	}
	return out
}
