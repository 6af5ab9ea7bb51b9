package image_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"go.podman.io/image/v5/docker/reference"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
)

const dgst = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseReference(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		short          bool
	}{
		{"accepts_a_docker_transport_prefix", "docker://quay.io/fedora/fedora-coreos:stable", "quay.io/fedora/fedora-coreos:stable", false},
		{"adds_latest_when_no_tag", "quay.io/x/os", "quay.io/x/os:latest", false},
		{"keeps_a_digest", "quay.io/x/os@" + dgst, "quay.io/x/os@" + dgst, false},
		{"prefers_the_digest_over_a_tag", "quay.io/x/os:41@" + dgst, "quay.io/x/os@" + dgst, false},
		{"canonicalises_docker_hub_names", "docker.io/fedora:41", "docker.io/library/fedora:41", false},
		{"treats_a_registry_with_a_port_as_qualified", "127.0.0.1:5000/os:1", "127.0.0.1:5000/os:1", false},
		{"treats_localhost_as_a_registry", "localhost/os:1", "localhost/os:1", false},
		{"flags_a_short_name", "fcos:41", "fcos:41", true},
		{"flags_a_short_name_with_a_namespace", "fedora/fcos:41", "fedora/fcos:41", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, short, err := image.ParseReference(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if n.String() != tc.want || short != tc.short {
				t.Errorf("got %s short=%v, want %s short=%v", n, short, tc.want, tc.short)
			}
		})
	}
	for _, tc := range []struct{ name, in string }{
		{"rejects_an_empty_reference", "  "},
		{"rejects_an_oci_layout", "oci:/var/tmp/os"},
		{"rejects_an_rpm_ostree_transport", "ostree-unverified-registry:quay.io/x/os:1"},
		{"rejects_upper_case_repositories", "quay.io/X/os:1"},
		{"rejects_a_malformed_digest", "quay.io/x/os@sha256:abc"},
		{"rejects_a_bare_digest", dgst},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if n, _, err := image.ParseReference(tc.in); err == nil {
				t.Errorf("parsed %q as %s", tc.in, n)
			}
		})
	}
}

func TestResolveShortNames(t *testing.T) {
	ctx := context.Background()
	t.Run("refuses_an_ambiguous_short_name_before_any_network_access", func(t *testing.T) {
		opts := baseOptions(t, `unqualified-search-registries = ["a.example", "b.example"]`)
		_, err := newClient(t, opts).Resolve(ctx, "fcos:41")
		if c := codeOf(t, err); c != reason.InvalidReference || !strings.Contains(err.Error(), "a.example") {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("refuses_a_short_name_without_search_registries", func(t *testing.T) {
		opts := baseOptions(t, `unqualified-search-registries = []`)
		if c := codeOf(t, func() error { _, err := newClient(t, opts).Resolve(ctx, "fcos:41"); return err }()); c != reason.InvalidReference {
			t.Fatalf("code %s", c)
		}
	})
	t.Run("uses_an_alias_and_keeps_the_tag", func(t *testing.T) {
		s := newStub(t, func(_ int, w http.ResponseWriter, _ *http.Request) { serveManifest(w) })
		conf := insecureConf(s.host()) + "[aliases]\n\"fcos\" = \"" + s.host() + "/fedora/os\"\n"
		res, err := newClient(t, baseOptions(t, conf)).Resolve(ctx, "fcos:41")
		if err != nil {
			t.Fatal(err)
		}
		if res.Name != s.host()+"/fedora/os:41" || res.Repo != s.host()+"/fedora/os" {
			t.Errorf("resolved to %s (repo %s)", res.Name, res.Repo)
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"quay.io/x/os:1", "docker://a.b/c@" + dgst, "fcos", "oci:/x", "a:1/b", "localhost:5000/x:y@" + dgst,
		"docker://", "ostree-remote-image:x", "A/b", "x/y:z:w", "127.0.0.1:5000/os:1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		n, short, err := image.ParseReference(in)
		if err != nil {
			return
		}
		_, tagged := n.(reference.Tagged)
		_, digested := n.(reference.Digested)
		if tagged == digested {
			t.Fatalf("%q → %s: want exactly one of tag or digest", in, n)
		}
		again, short2, err := image.ParseReference(n.String())
		if err != nil || again.String() != n.String() || short2 != short {
			t.Fatalf("%q → %s does not re-parse to itself: %v, %v", in, n, again, err)
		}
	})
}
