package rpmostree_test

import (
	"testing"

	"layerd.dev/layerd/rpmostree"
)

func TestContainerRefspec(t *testing.T) {
	want := "ostree-unverified-registry:quay.io/org/os@" + digestA
	for _, tc := range []struct {
		name, in, want string
		ok             bool
	}{
		{"pins_a_repo_digest", "quay.io/org/os@" + digestA, want, true},
		{"strips_docker_transport", "docker://quay.io/org/os@" + digestA, want, true},
		{"keeps_an_existing_refspec", want, want, true},
		{"keeps_a_registry_port", "127.0.0.1:5000/os@" + digestA, "ostree-unverified-registry:127.0.0.1:5000/os@" + digestA, true},
		{"rejects_a_tag", "quay.io/org/os:latest", "", false},
		{"rejects_a_short_digest", "quay.io/org/os@sha256:abc", "", false},
		{"rejects_an_upper_case_digest", "quay.io/org/os@sha256:" + "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "", false},
		{"rejects_a_missing_repo", "@" + digestA, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := rpmostree.ContainerRefspec(tc.in)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("ContainerRefspec(%q) = %q, %v", tc.in, got, err)
			}
		})
	}
	if d := rpmostree.DigestOf(want); d != digestA {
		t.Fatalf("DigestOf = %q", d)
	}
}

func TestParseImageRefspec(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want rpmostree.ImageRef
		ok   bool
	}{
		{"ostree-unverified-registry:quay.io/x/y:tag", rpmostree.ImageRef{Transport: "registry", Image: "quay.io/x/y:tag"}, true},
		{"ostree-unverified-image:docker://quay.io/x/y", rpmostree.ImageRef{Transport: "registry", Image: "quay.io/x/y"}, true},
		{"ostree-unverified-image:oci:/srv/img", rpmostree.ImageRef{Transport: "oci", Image: "/srv/img"}, true},
		{"ostree-image-signed:registry:quay.io/x/y", rpmostree.ImageRef{Transport: "registry", Image: "quay.io/x/y", Signature: "containerPolicy"}, true},
		{"ostree-remote-registry:fedora:quay.io/x/y", rpmostree.ImageRef{Transport: "registry", Image: "quay.io/x/y", Signature: "ostreeRemote", Remote: "fedora"}, true},
		{"ostree-remote-image:fedora:containers-storage:localhost/y", rpmostree.ImageRef{Transport: "containers-storage", Image: "localhost/y", Signature: "ostreeRemote", Remote: "fedora"}, true},
		{"fedora:fedora/x86_64/coreos/stable", rpmostree.ImageRef{}, false},
		{"ostree-unverified-image:docker:quay.io/x", rpmostree.ImageRef{}, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := rpmostree.ParseImageRefspec(tc.in)
			if ok != tc.ok || got != tc.want {
				t.Fatalf("got %+v, %v; want %+v, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}
