package registry_test

import (
	"net/http"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"

	"layerd.dev/layerd/test/registry"
)

func TestAccessLog(t *testing.T) {
	r := startRegistry(t)
	img := pushImage(t, r, "fcos/os", 3, 1024)

	t.Run("inspection fetches the manifest and only the config blob", func(t *testing.T) {
		r.ResetAccessLog()
		ref, err := docker.ParseReference("//" + img.ref)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		src, err := ref.NewImage(t.Context(), sysCtx(t))
		if err != nil {
			t.Fatalf("open %s: %v", img.ref, err)
		}
		defer src.Close()
		info, err := src.Inspect(t.Context())
		if err != nil {
			t.Fatalf("inspect: %v", err)
		}
		if len(info.Layers) != 3 {
			t.Fatalf("inspect saw %d layers, want 3", len(info.Layers))
		}
		if got := r.BlobsFetched(); !slices.Equal(got, []digest.Digest{img.config}) {
			t.Fatalf("blobs fetched %v, want only config %s", got, img.config)
		}
		if !hasManifestGet(r.AccessLog(), "v1", img.digest) {
			t.Fatalf("no manifest GET of tag v1 answered with %s in %+v", img.digest, r.AccessLog())
		}
	})

	t.Run("full pull fetches the config and every layer once", func(t *testing.T) {
		r.ResetAccessLog()
		if _, err := pullOCI(t.Context(), t, img.ref, filepath.Join(t.TempDir(), "oci")); err != nil {
			t.Fatalf("pull: %v", err)
		}
		got := r.BlobsFetched()
		want := append([]digest.Digest{img.config}, img.layers...)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("blobs fetched %v, want %v", got, want)
		}
		var bytes int64
		for _, a := range r.AccessLog() {
			if a.Kind == registry.KindBlob && a.Method == http.MethodGet {
				bytes += a.Bytes
			}
		}
		if bytes < 3*1024 {
			t.Fatalf("blob bytes sent %d, want at least the 3 layers", bytes)
		}
	})

	t.Run("reset empties the log", func(t *testing.T) {
		r.ResetAccessLog()
		if n := len(r.AccessLog()); n != 0 {
			t.Fatalf("%d entries after reset", n)
		}
	})

	t.Run("requests are classified by endpoint", func(t *testing.T) {
		r.ResetAccessLog()
		base := "http://" + r.Addr() + "/v2/"
		for _, u := range []string{"", "fcos/os/manifests/v1", "fcos/os/blobs/" + img.config.String(), "fcos/os/tags/list", "_catalog"} {
			get(t, http.DefaultClient, http.MethodGet, base+u).Body.Close()
		}
		want := []registry.Access{
			{Kind: registry.KindPing, Status: 200},
			{Kind: registry.KindManifest, Repo: "fcos/os", Reference: "v1", Digest: img.digest, Status: 200},
			{Kind: registry.KindBlob, Repo: "fcos/os", Reference: img.config.String(), Digest: img.config, Status: 200},
			{Kind: registry.KindTagList, Repo: "fcos/os", Status: 200},
			{Kind: registry.KindCatalog, Status: 200},
		}
		got := r.AccessLog()
		if len(got) != len(want) {
			t.Fatalf("log has %d entries, want %d: %+v", len(got), len(want), got)
		}
		for i, w := range want {
			g := got[i]
			if g.Kind != w.Kind || g.Repo != w.Repo || g.Reference != w.Reference || g.Digest != w.Digest || g.Status != w.Status || g.Method != http.MethodGet {
				t.Errorf("entry %d = %+v, want %+v", i, g, w)
			}
		}
	})
}

func hasManifestGet(log []registry.Access, ref string, d digest.Digest) bool {
	for _, a := range log {
		if a.Kind == registry.KindManifest && a.Method == http.MethodGet && a.Reference == ref && a.Digest == d && a.Status == http.StatusOK {
			return true
		}
	}
	return false
}
