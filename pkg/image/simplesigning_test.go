package image_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	"go.podman.io/image/v5/signature"

	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/osimage"
)

// gpgSigner is a signature.SigningMechanism that signs with an in-memory OpenPGP key, standing in
// for `skopeo copy --sign-by FINGERPRINT` (the openpgp build of go.podman.io/image verifies only).
type gpgSigner struct{ e *openpgp.Entity }

func newGPGSigner(t *testing.T) *gpgSigner {
	t.Helper()
	e, err := openpgp.NewEntity("layerd test", "", "test@layerd.dev", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA})
	if err != nil {
		t.Fatal(err)
	}
	return &gpgSigner{e: e}
}

func (g *gpgSigner) fingerprint() string { return fmt.Sprintf("%X", g.e.PrimaryKey.Fingerprint) }

func (g *gpgSigner) writePublicKey(t *testing.T, dir string) string {
	t.Helper()
	var b bytes.Buffer
	if err := g.e.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return writeFile(t, dir, "pubring.gpg", b.String())
}

func (g *gpgSigner) Close() error           { return nil }
func (g *gpgSigner) SupportsSigning() error { return nil }
func (g *gpgSigner) Sign(input []byte, _ string) ([]byte, error) {
	var out bytes.Buffer
	w, err := openpgp.Sign(&out, g.e, nil, nil)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(input); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
func (g *gpgSigner) Verify([]byte) ([]byte, string, error) { return nil, "", fmt.Errorf("sign only") }
func (g *gpgSigner) UntrustedSignatureContents([]byte) ([]byte, string, error) {
	return nil, "", fmt.Errorf("sign only")
}

// signSimple writes a simple-signing signature of img, claiming identity, into a lookaside
// directory laid out as go.podman.io/image reads it.
func signSimple(t *testing.T, g *gpgSigner, lookaside string, img *osimage.Image, identity string) {
	t.Helper()
	m, err := img.OCIImage().RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signature.SignDockerManifest(m, identity, g, g.fingerprint())
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(lookaside, img.Repo+"@"+img.Digest.Algorithm().String()+"="+img.Digest.Encoded())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "signature-1"), sig, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSimpleSigning(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	trusted, other := newGPGSigner(t), newGPGSigner(t)
	dir := t.TempDir()
	lookaside := filepath.Join(dir, "sigstore")
	opts := w.options(t)
	opts.RegistriesDDir = filepath.Join(dir, "registries.d")
	writeFile(t, opts.RegistriesDDir, "layerd.yaml", fmt.Sprintf("docker:\n  %s:\n    lookaside: file://%s\n", w.reg.Addr(), lookaside))
	opts.PolicyPath = w.writePolicy(t, `{"default":[{"type":"reject"}],"transports":{"docker":{"ADDR":[
		{"type":"signedBy","keyType":"GPGKeys","keyPath":"`+trusted.writePublicKey(t, dir)+`"}]}}}`)

	t.Run("an_image_signed_with_the_trusted_gpg_key_in_a_lookaside_store_is_accepted", func(t *testing.T) {
		img := w.base(t, "fcos/os", "gpg", "95.0")
		signSimple(t, trusted, lookaside, img, img.Ref)
		rep, err := newClient(t, opts).Inspect(ctx, img.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if v := rep.Signature; v.Signed != "manifest" || v.Types[0] != "signedBy" {
			t.Errorf("verdict %+v", v)
		}
	})
	t.Run("an_image_signed_with_another_gpg_key_is_SignatureRejected", func(t *testing.T) {
		img := w.base(t, "fcos/os", "gpg-other", "95.1")
		signSimple(t, other, lookaside, img, img.Ref)
		_, err := newClient(t, opts).Inspect(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.SignatureRejected {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("a_signature_for_another_repository_is_SignatureRejected", func(t *testing.T) {
		img := w.base(t, "fcos/os", "gpg-identity", "95.2")
		signSimple(t, trusted, lookaside, img, w.reg.Addr()+"/someone/else:v1")
		_, err := newClient(t, opts).Inspect(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.SignatureRejected || !strings.Contains(err.Error(), "someone/else") {
			t.Fatalf("code %s: %v", c, err)
		}
	})
}
