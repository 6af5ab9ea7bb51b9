package rpmostree_test

import (
	"encoding/json"
	"testing"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

func mustDeployment(t *testing.T, dict map[string]dbus.Variant) *rpmostree.Deployment {
	t.Helper()
	d, err := rpmostree.ParseDeployment(dict)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// lookup walks a decoded JSON document along keys.
func lookup(t *testing.T, doc any, keys ...string) any {
	t.Helper()
	for _, k := range keys {
		m, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("at %q: not an object: %v", k, doc)
		}
		if doc, ok = m[k]; !ok {
			t.Fatalf("missing key %q in %v", k, m)
		}
	}
	return doc
}

func TestToBootcHost(t *testing.T) {
	booted := mustDeployment(t, containerDeployment(0, digestA, true, false))
	booted.BaseCommitMeta = map[string]dbus.Variant{"ostree.container.image-config": dbus.MakeVariant(`{"architecture":"amd64"}`)}
	staged := mustDeployment(t, containerDeployment(1, digestB, false, true))
	rollback := mustDeployment(t, containerDeployment(2, digestA, false, false))
	st := &rpmostree.Status{
		Deployments: []rpmostree.Deployment{*staged, *booted, *rollback},
		Booted:      booted, Default: staged, Rollback: rollback, Staged: staged,
	}
	raw, err := json.Marshal(rpmostree.ToBootcHost(st))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}

	t.Run("uses_bootc_field_names_and_values", func(t *testing.T) {
		for _, tc := range []struct {
			path []string
			want any
		}{
			{[]string{"apiVersion"}, "org.containers.bootc/v1"},
			{[]string{"kind"}, "BootcHost"},
			{[]string{"metadata", "name"}, "host"},
			{[]string{"spec", "bootOrder"}, "default"},
			{[]string{"spec", "image", "image"}, "quay.io/org/os@" + digestB},
			{[]string{"status", "type"}, "bootcHost"},
			{[]string{"status", "rollbackQueued"}, false},
			{[]string{"status", "booted", "image", "image", "image"}, "quay.io/org/os@" + digestA},
			{[]string{"status", "booted", "image", "image", "transport"}, "registry"},
			{[]string{"status", "booted", "image", "imageDigest"}, digestA},
			{[]string{"status", "booted", "image", "version"}, "42.1"},
			{[]string{"status", "booted", "image", "timestamp"}, "2023-11-14T22:13:20Z"},
			{[]string{"status", "booted", "image", "architecture"}, "amd64"},
			{[]string{"status", "booted", "ostree", "checksum"}, "c0"},
			{[]string{"status", "booted", "ostree", "deploySerial"}, float64(0)},
			{[]string{"status", "booted", "ostree", "stateroot"}, "fedora"},
			{[]string{"status", "booted", "store"}, "ostreeContainer"},
			{[]string{"status", "booted", "pinned"}, false},
			{[]string{"status", "staged", "image", "imageDigest"}, digestB},
			{[]string{"status", "staged", "ostree", "deploySerial"}, float64(1)},
			{[]string{"status", "rollback", "ostree", "deploySerial"}, float64(2)},
			{[]string{"status", "booted", "cachedUpdate"}, nil},
			{[]string{"status", "usrOverlay"}, nil},
		} {
			if got := lookup(t, doc, tc.path...); got != tc.want {
				t.Errorf("%v = %v, want %v", tc.path, got, tc.want)
			}
		}
		if sig := lookup(t, doc, "status", "booted", "image", "image").(map[string]any)["signature"]; sig != nil {
			t.Errorf("unverified image has signature %v, want none", sig)
		}
	})

	t.Run("reports_an_empty_host_with_null_entries", func(t *testing.T) {
		raw, _ := json.Marshal(rpmostree.ToBootcHost(&rpmostree.Status{}))
		var doc any
		_ = json.Unmarshal(raw, &doc)
		if lookup(t, doc, "status", "booted") != nil || lookup(t, doc, "spec", "image") != nil {
			t.Fatalf("doc = %s", raw)
		}
		if others := lookup(t, doc, "status", "otherDeployments").([]any); len(others) != 0 {
			t.Fatalf("otherDeployments = %v", others)
		}
	})

	t.Run("writes_signature_sources_like_bootc", func(t *testing.T) {
		for refspec, want := range map[string]string{
			"ostree-image-signed:docker://quay.io/x":  `"containerPolicy"`,
			"ostree-remote-registry:fedora:quay.io/x": `{"ostreeRemote":"fedora"}`,
		} {
			d := containerDeployment(0, digestA, true, false)
			d["container-image-reference"] = dbus.MakeVariant(refspec)
			h := rpmostree.ToBootcHost(&rpmostree.Status{Booted: mustDeployment(t, d)})
			got, _ := json.Marshal(h.Status.Booted.Image.Image.Signature)
			if string(got) != want {
				t.Errorf("%s: signature %s, want %s", refspec, got, want)
			}
		}
	})
}
