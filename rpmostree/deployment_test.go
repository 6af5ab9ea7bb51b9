package rpmostree_test

import (
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

func TestParseDeployment(t *testing.T) {
	t.Run("reads_every_known_key_with_its_type", func(t *testing.T) {
		dict := containerDeployment(3, digestA, true, false)
		dict["pinned"] = dbus.MakeVariant(true)
		dict["base-checksum"] = dbus.MakeVariant("base")
		dict["packages"] = dbus.MakeVariant([]string{"htop"})
		dict["custom-origin"] = dbus.MakeVariantWithSignature([]any{"https://x", "desc"}, dbus.ParseSignatureMust("(ss)"))
		dict["base-commit-meta"] = dbus.MakeVariant(map[string]dbus.Variant{"ostree.manifest-digest": dbus.MakeVariant(digestA)})
		d, err := rpmostree.ParseDeployment(dict)
		if err != nil {
			t.Fatal(err)
		}
		if d.ID != "fedora-c3.3" || d.OSName != "fedora" || d.Serial != 3 || d.Timestamp != 1700000000 ||
			!d.Booted || d.Staged || !d.Pinned || d.Unlocked != "none" || d.Version != "42.1" ||
			d.ContainerImageReferenceDigest != digestA || d.BaseCommit() != "base" || !d.IsContainer() ||
			len(d.Packages) != 1 || d.CustomOrigin == nil || d.CustomOrigin.Description != "desc" {
			t.Fatalf("parsed = %+v", d)
		}
	})

	t.Run("ignores_unknown_keys", func(t *testing.T) {
		dict := containerDeployment(0, digestA, true, false)
		dict["modules"] = dbus.MakeVariant([]string{"x"})
		dict["requested-modules-enabled"] = dbus.MakeVariant(uint32(7))
		if _, err := rpmostree.ParseDeployment(dict); err != nil {
			t.Fatal(err)
		}
	})

	for _, tc := range []struct {
		key   string
		value any
	}{
		{"serial", int64(1)},
		{"serial", uint32(1)},
		{"timestamp", int64(1)},
		{"booted", "true"},
		{"id", dbus.ObjectPath("/x")},
		{"packages", []any{"x"}},
		{"custom-origin", []string{"a", "b"}},
	} {
		t.Run("rejects_"+tc.key+"_sent_as_"+dbus.SignatureOf(tc.value).String(), func(t *testing.T) {
			dict := containerDeployment(0, digestA, true, false)
			dict[tc.key] = dbus.MakeVariant(tc.value)
			_, err := rpmostree.ParseDeployment(dict)
			if err == nil || !strings.Contains(err.Error(), `"`+tc.key+`"`) {
				t.Fatalf("err = %v, want one naming %q", err, tc.key)
			}
		})
	}

	t.Run("requires_id_osname_and_checksum", func(t *testing.T) {
		for _, key := range []string{"id", "osname", "checksum"} {
			dict := containerDeployment(0, digestA, true, false)
			delete(dict, key)
			if _, err := rpmostree.ParseDeployment(dict); err == nil || !strings.Contains(err.Error(), key) {
				t.Errorf("without %s: err = %v", key, err)
			}
		}
	})

	t.Run("keeps_boot_order_and_names_the_bad_element", func(t *testing.T) {
		bad := containerDeployment(1, digestB, false, true)
		bad["serial"] = dbus.MakeVariant("1")
		_, err := rpmostree.ParseDeployments([]map[string]dbus.Variant{containerDeployment(0, digestA, true, false), bad})
		if err == nil || !strings.Contains(err.Error(), "deployment 1") {
			t.Fatalf("err = %v", err)
		}
	})
}
