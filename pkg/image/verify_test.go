package image_test

import (
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
)

func TestVerifyPolicy(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()

	t.Run("an_image_signed_with_the_trusted_key_is_accepted", func(t *testing.T) {
		img := w.base(t, "fcos/os", "trusted", "41.1")
		sign(t, img.Ref, trustedKeys)
		rep, err := w.client(t).Inspect(ctx, img.Ref)
		if err != nil {
			t.Fatal(err)
		}
		v := rep.Signature
		if !rep.Accepted || !v.Accepted || v.Signed != "manifest" || v.SignedDigest != img.Digest {
			t.Fatalf("report %+v verdict %+v", rep, v)
		}
		if v.Scope != "docker:"+w.reg.Addr() || len(v.Types) != 1 || v.Types[0] != "sigstoreSigned" ||
			!strings.Contains(string(v.Requirements), trustedKeys.PublicKeyPath) {
			t.Errorf("verdict names the wrong requirement: %+v %s", v, v.Requirements)
		}
		if rep.Pinned != img.Pinned || rep.ManifestDigest != img.Digest || rep.IndexDigest != "" || rep.Version != "41.1" {
			t.Errorf("report %+v, image %+v", rep, img)
		}
	})
	t.Run("an_unsigned_image_is_SignatureRejected", func(t *testing.T) {
		img := w.base(t, "fcos/os", "unsigned", "41.2")
		rep, err := w.client(t).Inspect(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
		if rep.Signature == nil || rep.Signature.Accepted || !strings.Contains(rep.Signature.Message, "no signature exists") ||
			strings.Contains(rep.Signature.Message, "registries.d") {
			t.Errorf("verdict %+v", rep.Signature)
		}
		if rep.Labels != nil {
			t.Error("the config of a rejected image was read")
		}
	})
	t.Run("an_image_signed_with_another_key_is_SignatureRejected", func(t *testing.T) {
		img := w.base(t, "fcos/os", "foreign", "41.3")
		sign(t, img.Ref, otherKeys)
		_, err := w.client(t).Verify(ctx, mustResolve(t, w.client(t), img.Ref))
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
		if !strings.Contains(err.Error(), "signature") || !strings.Contains(err.Error(), img.Pinned) {
			t.Errorf("message %v", err)
		}
	})

	scoped := `{"default":[{"type":"reject"}],"transports":{"docker":{
		"ADDR":[{"type":"sigstoreSigned","keyPath":"KEY","signedIdentity":{"type":"matchRepoDigestOrExact"}}],
		"ADDR/fcos/closed":[{"type":"reject"}],
		"ADDR/fcos/open":[{"type":"insecureAcceptAnything"}]}}}`
	t.Run("a_repository_scoped_to_reject_is_rejected_even_when_signed", func(t *testing.T) {
		img := w.base(t, "fcos/closed", "v1", "41.4")
		sign(t, img.Ref, trustedKeys)
		opts := w.options(t)
		opts.PolicyPath = w.writePolicy(t, scoped)
		v, err := newClient(t, opts).Verify(ctx, mustResolve(t, newClient(t, opts), img.Ref))
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
		if v.Accepted || v.Scope != "docker:"+w.reg.Addr()+"/fcos/closed" || v.Types[0] != "reject" {
			t.Errorf("verdict %+v", v)
		}
	})
	t.Run("an_insecureAcceptAnything_scope_accepts_an_unsigned_image_and_says_no_signature_was_required", func(t *testing.T) {
		img := w.base(t, "fcos/open", "v1", "41.5")
		opts := w.options(t)
		opts.PolicyPath = w.writePolicy(t, scoped)
		rep, err := newClient(t, opts).Inspect(ctx, img.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if v := rep.Signature; !v.Accepted || v.Signed != "" || v.Scope != "docker:"+w.reg.Addr()+"/fcos/open" {
			t.Errorf("verdict %+v", v)
		}
	})
	t.Run("a_missing_registries_d_hint_is_given_when_no_signature_is_found", func(t *testing.T) {
		img := w.base(t, "fcos/os", "nolookaside", "41.6")
		sign(t, img.Ref, trustedKeys)
		opts := w.options(t)
		opts.RegistriesDDir = t.TempDir() // no use-sigstore-attachments
		_, err := newClient(t, opts).Verify(ctx, mustResolve(t, newClient(t, opts), img.Ref))
		if c := codeOf(t, err); c != reason.SignatureRejected || !strings.Contains(err.Error(), "use-sigstore-attachments") {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("a_broken_policy_file_rejects", func(t *testing.T) {
		img := w.base(t, "fcos/os", "brokenpolicy", "41.7")
		opts := w.options(t)
		opts.PolicyPath = w.writePolicy(t, `{"default":[{"type":"bogus"}]}`)
		_, err := newClient(t, opts).Verify(ctx, mustResolve(t, newClient(t, opts), img.Ref))
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
	})
}

func TestDigestPinning(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	t.Run("a_tag_moved_after_resolve_does_not_change_what_is_verified_and_validated", func(t *testing.T) {
		good := w.base(t, "fcos/os", "stable", "42.0")
		sign(t, good.Ref, trustedKeys)
		evil := w.base(t, "fcos/os", "evil", "66.6") // unsigned
		c := w.client(t)
		res := mustResolve(t, c, "docker://"+good.Ref)
		if _, err := w.b.MoveTag(ctx, "stable", evil); err != nil {
			t.Fatal(err)
		}
		v, err := c.Verify(ctx, res)
		if err != nil || v.SignedDigest != good.Digest {
			t.Fatalf("verify after the move: %+v %v", v, err)
		}
		info, err := c.Validate(ctx, res)
		if err != nil || info.Version != "42.0" || info.ConfigDigest != good.Config {
			t.Fatalf("validate after the move: %+v %v", info, err)
		}
		again := mustResolve(t, c, good.Ref)
		if again.ManifestDigest != evil.Digest {
			t.Errorf("a new resolve should see the moved tag: %s", again.ManifestDigest)
		}
		if _, err := c.Verify(ctx, again); codeOf(t, err) != reason.SignatureRejected {
			t.Errorf("the unsigned image the tag now names must be rejected: %v", err)
		}
	})
	t.Run("a_resolved_value_whose_index_does_not_list_the_manifest_is_refused", func(t *testing.T) {
		amd := w.base(t, "fcos/pin", "amd", "43.0")
		other := w.base(t, "fcos/pin", "other", "43.1")
		idx := w.index(t, "fcos/pin", "multi", amd)
		sign(t, idx.Pinned, trustedKeys)
		sign(t, other.Pinned, trustedKeys)
		c := w.client(t)
		res := mustResolve(t, c, idx.Ref)
		res.ManifestDigest = other.Digest // forged: signed, but not in this index
		if _, err := c.Verify(ctx, res); codeOf(t, err) != reason.DigestMismatch {
			t.Fatalf("verify of a forged pair: %v", err)
		}
	})
}

func mustResolve(t *testing.T, c *image.Client, ref string) *image.Resolved {
	t.Helper()
	r, err := c.Resolve(t.Context(), ref)
	if err != nil {
		t.Fatalf("resolve %s: %v", ref, err)
	}
	return r
}
