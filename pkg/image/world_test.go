package image_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/signature"
	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// Test keys are generated once per test binary, on first use (scrypt makes generation slow, and
// fuzz workers never need them); TestMain removes them.
var (
	keysOnce               sync.Once
	keysDir                string
	trustedKeys, otherKeys *osimage.Keys
	keysErr                error
)

func loadKeys(t *testing.T) {
	t.Helper()
	keysOnce.Do(func() {
		if keysDir, keysErr = os.MkdirTemp("", "layerd-image-keys-"); keysErr != nil {
			return
		}
		if trustedKeys, keysErr = osimage.GenerateKeys(filepath.Join(keysDir, "trusted"), "trusted-pass"); keysErr != nil {
			return
		}
		otherKeys, keysErr = osimage.GenerateKeys(filepath.Join(keysDir, "other"), "other-pass")
	})
	if keysErr != nil {
		t.Fatalf("generating test keys: %v", keysErr)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	if keysDir != "" {
		if err := os.RemoveAll(keysDir); err != nil {
			fmt.Fprintln(os.Stderr, err)
		}
	}
	os.Exit(code)
}

// world is a loopback registry, an image builder for it and the trust files (policy.json:
// reject by default, the whole registry needs a sigstore signature by trustedKeys).
type world struct {
	reg   *registry.Registry
	b     *osimage.Builder
	trust osimage.TrustFiles
	dir   string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	loadKeys(t)
	reg := startRegistry(t)
	dir := t.TempDir()
	tf, err := osimage.WriteTrust(filepath.Join(dir, "trust"), reg.Addr(), trustedKeys)
	if err != nil {
		t.Fatal(err)
	}
	return &world{reg: reg, b: &osimage.Builder{Registry: reg.Addr()}, trust: tf, dir: dir}
}

func startRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	reg, err := registry.Start(registry.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	})
	return reg
}

// options points a client at the world's trust files, as the agent would at the host's.
func (w *world) options(t *testing.T) image.Options {
	t.Helper()
	return image.Options{
		RegistriesConfPath: w.trust.RegistriesConfPath,
		RegistriesConfDir:  w.trust.RegistriesConfDir,
		RegistriesDDir:     w.trust.RegistriesDDir,
		PolicyPath:         w.trust.PolicyPath,
		AuthFilePath:       writeFile(t, w.dir, "auth.json", `{"auths":{}}`),
		BlobInfoCacheDir:   w.trust.BlobInfoCacheDir,
		OS:                 "linux",
		Arch:               "amd64",
		Logger:             zaptest.NewLogger(t),
		Clock:              newFakeClock(),
	}
}

func (w *world) client(t *testing.T) *image.Client { return newClient(t, w.options(t)) }

// base builds and pushes a base image; version makes its digest unique.
func (w *world) base(t *testing.T, repo, tag, version string, edit ...func(*osimage.Spec)) *osimage.Image {
	t.Helper()
	s := osimage.Spec{Repo: repo, Tag: tag, Version: version}
	for _, e := range edit {
		e(&s)
	}
	img, err := w.b.Base(t.Context(), s)
	if err != nil {
		t.Fatalf("build %s:%s: %v", repo, tag, err)
	}
	return img
}

func (w *world) index(t *testing.T, repo, tag string, imgs ...*osimage.Image) *osimage.Image {
	t.Helper()
	idx, err := w.b.Index(t.Context(), repo, tag, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}

// sign signs ref (and, for an index, every member) the way `skopeo copy --all --sign-by-sigstore` does.
func sign(t *testing.T, ref string, keys *osimage.Keys) {
	t.Helper()
	if err := osimage.Sign(t.Context(), ref, keys); err != nil {
		t.Fatal(err)
	}
}

// signOnly signs exactly the manifest or index at pinned, claiming identity: for an index this
// is what `cosign sign` does (the members stay unsigned).
func (w *world) signOnly(t *testing.T, pinned, identity string, keys *osimage.Keys) {
	t.Helper()
	named, err := reference.ParseNormalizedNamed(pinned)
	if err != nil {
		t.Fatal(err)
	}
	id, err := reference.ParseNormalizedNamed(identity)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := docker.NewReference(named)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := pc.Destroy(); err != nil {
			t.Error(err)
		}
	}()
	sys := w.trust.SystemContext()
	_, err = copy.Image(context.Background(), pc, ref, ref, &copy.Options{
		SourceCtx: sys, DestinationCtx: sys,
		SignBySigstorePrivateKeyFile: keys.PrivateKeyPath, SignSigstorePrivateKeyPassphrase: keys.Passphrase,
		SignIdentity:       id,
		ImageListSelection: copy.CopySpecificImages, // no instances: only the index itself is written and signed
		PreserveDigests:    true,
		ReportWriter:       io.Discard,
	})
	if err != nil {
		t.Fatalf("signing %s: %v", pinned, err)
	}
}

// writePolicy writes a policy.json; ADDR and KEY in text are replaced by the registry address and
// the trusted public key path.
func (w *world) writePolicy(t *testing.T, text string) string {
	t.Helper()
	text = strings.NewReplacer("ADDR", w.reg.Addr(), "KEY", trustedKeys.PublicKeyPath).Replace(text)
	return writeFile(t, t.TempDir(), "policy.json", text)
}

// bytesServed sums the response bodies in the access log.
func bytesServed(reg *registry.Registry) (n int64, requests int) {
	for _, a := range reg.AccessLog() {
		n += a.Bytes
		requests++
	}
	return n, requests
}
