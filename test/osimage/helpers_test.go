package osimage_test

import (
	"archive/tar"
	"errors"
	"io"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// world is a registry plus a builder for it, torn down with the test.
type world struct {
	reg *registry.Registry
	b   *osimage.Builder
}

func newWorld(t *testing.T) world {
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
	return world{reg: r, b: &osimage.Builder{Registry: r.Addr()}}
}

// entry is a tar entry and, for regular files, its content.
type entry struct {
	hdr     *tar.Header
	content string
}

// fetch reads an image back from the registry by reference.
func fetch(t *testing.T, ref string) v1.Image {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatalf("parse %s: %v", ref, err)
	}
	img, err := remote.Image(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("fetch %s: %v", ref, err)
	}
	return img
}

// layerEntries lists the tar entries of each layer of the pushed image.
func layerEntries(t *testing.T, ref string) []map[string]entry {
	t.Helper()
	layers, err := fetch(t, ref).Layers()
	if err != nil {
		t.Fatalf("layers of %s: %v", ref, err)
	}
	var out []map[string]entry
	for i, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatalf("layer %d: %v", i, err)
		}
		m := map[string]entry{}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("layer %d: read tar: %v", i, err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatalf("layer %d: read %s: %v", i, h.Name, err)
			}
			m[h.Name] = entry{hdr: h, content: string(b)}
		}
		rc.Close()
		out = append(out, m)
	}
	return out
}

// merged flattens layer entries naively (later layers win, whiteouts kept).
func merged(layers []map[string]entry) map[string]entry {
	out := map[string]entry{}
	for _, l := range layers {
		for k, v := range l {
			out[k] = v
		}
	}
	return out
}
