package osimage

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/signature/signer"
	"go.podman.io/image/v5/signature/sigstore"
	"go.podman.io/image/v5/types"
)

// Keys is a cosign-format sigstore key pair on disk. Use it by pointer.
type Keys struct {
	PrivateKeyPath string // cosign.key: encrypted PEM private key
	PublicKeyPath  string // cosign.pub: PEM public key
	Passphrase     []byte

	// The decrypted signer, loaded once: the key is scrypt-protected and
	// decrypting it costs seconds under -race.
	mu     sync.Mutex
	signer *signer.Signer
}

// loadSigner decrypts the private key on first use. This is what
// copy.Options.SignBySigstorePrivateKeyFile does on every copy.
func (k *Keys) loadSigner() (*signer.Signer, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.signer == nil {
		s, err := sigstore.NewSigner(sigstore.WithPrivateKeyFile(k.PrivateKeyPath, k.Passphrase))
		if err != nil {
			return nil, fmt.Errorf("load private key %s: %w", k.PrivateKeyPath, err)
		}
		k.signer = s
	}
	return k.signer, nil
}

// GenerateKeys creates an ECDSA P-256 key pair and writes dir/cosign.key and
// dir/cosign.pub.
func GenerateKeys(dir, passphrase string) (*Keys, error) {
	kp, err := sigstore.GenerateKeyPair([]byte(passphrase))
	if err != nil {
		return nil, fmt.Errorf("generate sigstore key pair: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create key dir: %w", err)
	}
	k := &Keys{
		PrivateKeyPath: filepath.Join(dir, "cosign.key"),
		PublicKeyPath:  filepath.Join(dir, "cosign.pub"),
		Passphrase:     []byte(passphrase),
	}
	if err := os.WriteFile(k.PrivateKeyPath, kp.PrivateKey, 0o600); err != nil {
		return nil, fmt.Errorf("write private key: %w", err)
	}
	if err := os.WriteFile(k.PublicKeyPath, kp.PublicKey, 0o644); err != nil {
		return nil, fmt.Errorf("write public key: %w", err)
	}
	return k, nil
}

// Sign adds a sigstore signature (a cosign-style "sha256-<digest>.sig"
// attachment) to an image or index already in a plain-HTTP registry.
//
// ref is "host/repo:tag" or "host/repo@sha256:...". The tag is resolved to
// a digest first and the copy runs digest to digest, so a concurrent tag
// move cannot change what gets signed. The signed identity is ref as given:
// under matchRepoDigestOrExact, signing "repo:tag" admits pulls by that tag
// and by digest, signing "repo@sha256:..." admits pulls by digest only. For
// an index, the index digest and every member are signed. The private key
// is decrypted on the first Sign with keys and kept in keys.
func Sign(ctx context.Context, ref string, keys *Keys) error {
	if keys == nil {
		return fmt.Errorf("sign %s: no keys", ref)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return fmt.Errorf("sign: parse %q: %w", ref, err)
	}
	tmp, err := os.MkdirTemp("", "osimage-sign-")
	if err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	defer os.RemoveAll(tmp)
	tf, err := writeTrustFiles(tmp, reference.Domain(named), nil, nil)
	if err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	sys := tf.SystemContext()

	pinned, err := pin(ctx, sys, named)
	if err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		return fmt.Errorf("sign %s: policy context: %w", ref, err)
	}
	defer pc.Destroy()
	sgn, err := keys.loadSigner()
	if err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	_, err = copy.Image(ctx, pc, pinned, pinned, &copy.Options{
		SourceCtx:          sys,
		DestinationCtx:     sys,
		Signers:            []*signer.Signer{sgn},
		SignIdentity:       named,
		ImageListSelection: copy.CopyAllImages,
		PreserveDigests:    true,
		ReportWriter:       io.Discard,
	})
	if err != nil {
		return fmt.Errorf("sign %s: %w", ref, err)
	}
	return nil
}

// pin resolves named to a digest reference in the docker transport.
func pin(ctx context.Context, sys *types.SystemContext, named reference.Named) (types.ImageReference, error) {
	if c, ok := named.(reference.Canonical); ok {
		d, err := reference.WithDigest(reference.TrimNamed(named), c.Digest())
		if err != nil {
			return nil, fmt.Errorf("pin: %w", err)
		}
		return docker.NewReference(d)
	}
	tagged, err := docker.NewReference(reference.TagNameOnly(named))
	if err != nil {
		return nil, fmt.Errorf("pin: %w", err)
	}
	d, err := docker.GetDigest(ctx, sys, tagged)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", named, err)
	}
	c, err := reference.WithDigest(reference.TrimNamed(named), d)
	if err != nil {
		return nil, fmt.Errorf("pin: %w", err)
	}
	return docker.NewReference(c)
}
