package image_test

import (
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/osimage"
)

func TestMultiArch(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	arm64 := func(s *osimage.Spec) { s.Arch = "arm64" }
	// build pushes an amd64 + arm64 index; version keeps digests (and so signatures) apart.
	build := func(t *testing.T, tag, version string) (idx, amd, arm *osimage.Image) {
		amd = w.base(t, "fcos/multi", tag+"-amd64", version)
		arm = w.base(t, "fcos/multi", tag+"-arm64", version, arm64)
		return w.index(t, "fcos/multi", tag, amd, arm), amd, arm
	}
	armNode := func(t *testing.T) *image.Client { return newClientFor(t, w, "arm64") }

	t.Run("an_index_signed_by_its_index_digest_only_resolves_to_the_node_arch_verifies_and_reports_both_digests", func(t *testing.T) {
		idx, _, arm := build(t, "cosign", "50.0")
		w.signOnly(t, idx.Pinned, idx.Ref, trustedKeys) // like `cosign sign`: members unsigned
		rep, err := armNode(t).Inspect(ctx, idx.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if rep.IndexDigest != idx.Digest || rep.ManifestDigest != arm.Digest || rep.Pinned != arm.Pinned {
			t.Errorf("digests: index %s manifest %s pinned %s; want %s %s", rep.IndexDigest, rep.ManifestDigest, rep.Pinned, idx.Digest, arm.Digest)
		}
		if v := rep.Signature; v.Signed != "index" || v.SignedDigest != idx.Digest {
			t.Errorf("verdict %+v", v)
		}
		if p := rep.Platform; p == nil || p.Arch != "arm64" || p.Variant != "v8" {
			t.Errorf("platform %+v", p)
		}
	})
	t.Run("an_index_whose_members_alone_are_signed_verifies_through_the_member", func(t *testing.T) {
		idx, amd, _ := build(t, "members", "50.1")
		sign(t, amd.Pinned, trustedKeys)
		rep, err := w.client(t).Inspect(ctx, idx.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if v := rep.Signature; v.Signed != "manifest" || v.SignedDigest != amd.Digest {
			t.Errorf("verdict %+v", v)
		}
	})
	t.Run("an_index_signed_with_skopeo_copy_all_verifies_by_its_index", func(t *testing.T) {
		idx, _, _ := build(t, "all", "50.2")
		sign(t, idx.Ref, trustedKeys)
		rep, err := armNode(t).Inspect(ctx, idx.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Signature.Signed != "index" {
			t.Errorf("verdict %+v", rep.Signature)
		}
	})
	t.Run("an_index_signed_with_another_key_is_rejected_naming_both_digests", func(t *testing.T) {
		idx, amd, _ := build(t, "foreign", "50.3")
		sign(t, idx.Ref, otherKeys)
		_, err := w.client(t).Verify(ctx, mustResolve(t, w.client(t), idx.Ref))
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
		if !strings.Contains(err.Error(), string(idx.Digest)) || !strings.Contains(err.Error(), string(amd.Digest)) {
			t.Errorf("message should name both digests: %v", err)
		}
	})
	t.Run("a_node_arch_missing_from_the_index_is_ArchMismatch", func(t *testing.T) {
		idx, _, _ := build(t, "noarch", "50.4")
		_, err := newClientFor(t, w, "s390x").Resolve(ctx, idx.Ref)
		if c := codeOf(t, err); c != reason.ArchMismatch || !strings.Contains(err.Error(), "linux/arm64/v8") {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("a_single_image_for_another_arch_is_ArchMismatch", func(t *testing.T) {
		arm := w.base(t, "fcos/single", "arm", "50.5", arm64)
		sign(t, arm.Ref, trustedKeys)
		rep, err := newClientFor(t, w, "x86_64").Inspect(ctx, arm.Ref)
		if c := codeOf(t, err); c != reason.ArchMismatch {
			t.Fatalf("code %s: %v", c, err)
		}
		if rep.Platform == nil || rep.Platform.Arch != "arm64" {
			t.Errorf("report should show the image platform: %+v", rep.Platform)
		}
	})
}

func newClientFor(t *testing.T, w *world, arch string) *image.Client {
	t.Helper()
	opts := w.options(t)
	opts.Arch = arch
	return newClient(t, opts)
}
