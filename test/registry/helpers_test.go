package registry_test

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/copy"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/signature"
	ctypes "go.podman.io/image/v5/types"

	"layerd.dev/layerd/test/registry"
)

// startRegistry starts a registry closed at the end of the test.
func startRegistry(t *testing.T) *registry.Registry {
	t.Helper()
	r, err := registry.Start(registry.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("start registry: %v", err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("close registry: %v", err)
		}
	})
	return r
}

// pushed is a test image in the registry.
type pushed struct {
	ref    string // host/repo:tag
	digest digest.Digest
	config digest.Digest
	layers []digest.Digest
}

// pushImage pushes an OCI image with n random layers of size bytes.
func pushImage(t *testing.T, r *registry.Registry, repo string, n int, size int64) pushed {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatalf("random layer: %v", err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatalf("append layer: %v", err)
		}
	}
	ref := r.Addr() + "/" + repo + ":v1"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	if err := remote.Write(tag, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return describeImage(t, ref, img)
}

func describeImage(t *testing.T, ref string, img v1.Image) pushed {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatalf("image digest: %v", err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("image manifest: %v", err)
	}
	p := pushed{ref: ref, digest: digest.Digest(d.String()), config: digest.Digest(m.Config.Digest.String())}
	for _, l := range m.Layers {
		p.layers = append(p.layers, digest.Digest(l.Digest.String()))
	}
	return p
}

// sysCtx is an isolated containers/image context for a plain-HTTP registry.
func sysCtx(t *testing.T) *ctypes.SystemContext {
	dir := t.TempDir()
	return &ctypes.SystemContext{
		DockerInsecureSkipTLSVerify: ctypes.OptionalBoolTrue,
		SystemRegistriesConfPath:    "/dev/null",
		SystemRegistriesConfDirPath: filepath.Join(dir, "registries.conf.d"),
		RegistriesDirPath:           filepath.Join(dir, "registries.d"),
		BlobInfoCacheDir:            dir,
		AuthFilePath:                filepath.Join(dir, "auth.json"),
	}
}

// pullOCI copies ref into an oci: layout with containers/image and returns
// the manifest bytes written.
func pullOCI(ctx context.Context, t *testing.T, ref, dir string) ([]byte, error) {
	t.Helper()
	src, err := docker.ParseReference("//" + ref)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	dst, err := layout.ParseReference(dir + ":pulled")
	if err != nil {
		t.Fatalf("parse oci dir: %v", err)
	}
	pc, err := signature.NewPolicyContext(&signature.Policy{
		Default: signature.PolicyRequirements{signature.NewPRInsecureAcceptAnything()},
	})
	if err != nil {
		t.Fatalf("policy context: %v", err)
	}
	defer pc.Destroy()
	sys := sysCtx(t)
	return copy.Image(ctx, pc, dst, src, &copy.Options{SourceCtx: sys, DestinationCtx: sys})
}

// get performs a plain HTTP request against the registry.
func get(t *testing.T, c *http.Client, method, url string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, nil)
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	req.Header.Set("Accept", string(types.OCIManifestSchema1))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}
