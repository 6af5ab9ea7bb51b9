package osimage_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/oci/layout"

	"layerd.dev/layerd/test/osimage"
)

// verify asks the policy whether ref may run, as a pull would.
func verify(ctx context.Context, t *testing.T, tf osimage.TrustFiles, ref string) error {
	t.Helper()
	pc, err := tf.PolicyContext()
	if err != nil {
		t.Fatalf("policy: %v", err)
	}
	defer pc.Destroy()
	r, err := docker.ParseReference("//" + ref)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	src, err := r.NewImageSource(ctx, tf.SystemContext())
	if err != nil {
		t.Fatalf("open %s: %v", ref, err)
	}
	defer src.Close()
	allowed, err := pc.IsRunningImageAllowed(ctx, image.UnparsedInstance(src, nil))
	if allowed != (err == nil) {
		t.Fatalf("IsRunningImageAllowed = %v, %v", allowed, err)
	}
	return err
}

func TestSigning(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	dir := t.TempDir()
	start := time.Now()
	keys, err := osimage.GenerateKeys(filepath.Join(dir, "keys"), "secret")
	if err != nil {
		t.Fatalf("keys: %v", err)
	}
	other, err := osimage.GenerateKeys(filepath.Join(dir, "other"), "other")
	if err != nil {
		t.Fatalf("other keys: %v", err)
	}
	tf, err := osimage.WriteTrust(filepath.Join(dir, "trust"), w.reg.Addr(), keys)
	if err != nil {
		t.Fatalf("trust: %v", err)
	}
	build := func(repo, tag, arch string) *osimage.Image {
		img, err := w.b.Base(ctx, osimage.Spec{Repo: repo, Tag: tag, Arch: arch})
		if err != nil {
			t.Fatalf("build %s:%s: %v", repo, tag, err)
		}
		return img
	}
	signed, unsigned, foreign := build("fcos/os", "signed", ""), build("fcos/os", "unsigned", ""), build("fcos/os", "foreign", "")
	// Distinct content, so signatures (bound to digests) do not overlap.
	unsigned2, err := w.b.Layered(ctx, unsigned, osimage.Spec{Repo: "fcos/os", Tag: "unsigned", Files: map[string]osimage.File{"usr/x": {}}})
	if err != nil {
		t.Fatalf("layered: %v", err)
	}
	foreign2, err := w.b.Layered(ctx, foreign, osimage.Spec{Repo: "fcos/os", Tag: "foreign", Files: map[string]osimage.File{"usr/y": {}}})
	if err != nil {
		t.Fatalf("layered: %v", err)
	}
	t.Logf("setup (2 key pairs, 5 images): %v", time.Since(start))
	start = time.Now()
	if err := osimage.Sign(ctx, signed.Ref, keys); err != nil {
		t.Fatalf("sign: %v", err)
	}
	if err := osimage.Sign(ctx, foreign2.Ref, other); err != nil {
		t.Fatalf("sign with other key: %v", err)
	}
	t.Logf("2 signatures: %v", time.Since(start))

	t.Run("key files are cosign PEM", func(t *testing.T) {
		for p, head := range map[string]string{keys.PrivateKeyPath: "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----", keys.PublicKeyPath: "-----BEGIN PUBLIC KEY-----"} {
			b, err := os.ReadFile(p)
			if err != nil || !strings.HasPrefix(string(b), head) {
				t.Errorf("%s: %v %.40q", p, err, b)
			}
		}
	})

	t.Run("policy rejects by default and requires the key for the registry", func(t *testing.T) {
		b, err := os.ReadFile(tf.PolicyPath)
		if err != nil {
			t.Fatalf("read policy: %v", err)
		}
		var p struct {
			Default    []map[string]any                       `json:"default"`
			Transports map[string]map[string][]map[string]any `json:"transports"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatalf("policy json: %v", err)
		}
		req := p.Transports["docker"][w.reg.Addr()]
		if p.Default[0]["type"] != "reject" || len(req) != 1 || req[0]["type"] != "sigstoreSigned" || req[0]["keyPath"] != keys.PublicKeyPath {
			t.Fatalf("policy.json:\n%s", b)
		}
		for _, f := range []string{filepath.Join(tf.RegistriesDDir, "default.yaml"), tf.RegistriesConfPath} {
			if _, err := os.Stat(f); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("signing keeps the digest and stores a sigstore attachment", func(t *testing.T) {
		if d := fetchDigest(t, signed.Ref); d != signed.Digest.String() {
			t.Fatalf("tag now %s, was %s", d, signed.Digest)
		}
		fetch(t, w.reg.Addr()+"/fcos/os:"+strings.Replace(signed.Digest.String(), ":", "-", 1)+".sig")
	})

	t.Run("signed image verifies by tag and by digest", func(t *testing.T) {
		for _, ref := range []string{signed.Ref, signed.Pinned} {
			if err := verify(ctx, t, tf, ref); err != nil {
				t.Errorf("%s: %v", ref, err)
			}
		}
	})

	t.Run("signed image pulls through the policy", func(t *testing.T) {
		pc, err := tf.PolicyContext()
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Destroy()
		src, _ := docker.ParseReference("//" + signed.Ref)
		dst, _ := layout.ParseReference(filepath.Join(t.TempDir(), "oci") + ":x")
		sys := tf.SystemContext()
		if _, err := copy.Image(ctx, pc, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys, RemoveSignatures: true}); err != nil {
			t.Fatalf("pull: %v", err)
		}
	})

	t.Run("unsigned image is rejected", func(t *testing.T) {
		err := verify(ctx, t, tf, unsigned2.Ref)
		if err == nil || !strings.Contains(err.Error(), "no signature exists") {
			t.Fatalf("got %v, want a missing-signature rejection", err)
		}
	})

	t.Run("image signed with another key is rejected", func(t *testing.T) {
		err := verify(ctx, t, tf, foreign2.Ref)
		if err == nil || !strings.Contains(err.Error(), "signature") {
			t.Fatalf("got %v, want a signature verification failure", err)
		}
	})

	t.Run("repository outside the scopes is rejected", func(t *testing.T) {
		scoped, err := osimage.WriteTrust(filepath.Join(dir, "scoped"), w.reg.Addr(), keys, w.reg.Addr()+"/other")
		if err != nil {
			t.Fatalf("trust: %v", err)
		}
		err = verify(ctx, t, scoped, signed.Ref)
		if err == nil || !strings.Contains(err.Error(), "rejected by policy") {
			t.Fatalf("got %v, want a policy rejection", err)
		}
	})

	t.Run("multi-arch index signed by index digest verifies", func(t *testing.T) {
		amd, arm := build("fcos/multi", "amd64", "amd64"), build("fcos/multi", "arm64", "arm64")
		idx, err := w.b.Index(ctx, "fcos/multi", "v1", amd, arm)
		if err != nil {
			t.Fatalf("index: %v", err)
		}
		if err := verify(ctx, t, tf, idx.Ref); err == nil {
			t.Fatal("unsigned index accepted")
		}
		if err := osimage.Sign(ctx, idx.Pinned, keys); err != nil {
			t.Fatalf("sign index: %v", err)
		}
		if d := fetchDigest(t, idx.Ref); d != idx.Digest.String() {
			t.Fatalf("index tag now %s, was %s", d, idx.Digest)
		}
		if err := verify(ctx, t, tf, idx.Pinned); err != nil {
			t.Fatalf("index by digest: %v", err)
		}
		pc, err := tf.PolicyContext()
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Destroy()
		src, _ := docker.ParseReference("//" + idx.Pinned)
		dst, _ := layout.ParseReference(filepath.Join(t.TempDir(), "oci") + ":x")
		sys := tf.SystemContext()
		sys.ArchitectureChoice = "arm64"
		if _, err := copy.Image(ctx, pc, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys, RemoveSignatures: true}); err != nil {
			t.Fatalf("pull arm64 from the signed index: %v", err)
		}
	})
}

func fetchDigest(t *testing.T, ref string) string {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	desc, err := remote.Head(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("head %s: %v", ref, err)
	}
	return desc.Digest.String()
}
