package registry_test

import (
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/opencontainers/go-digest"

	"layerd.dev/layerd/test/registry"
)

func TestPushPull(t *testing.T) {
	r := startRegistry(t)
	img := pushImage(t, r, "fcos/os", 3, 2048)

	t.Run("pulled layout has the pushed manifest and blob digests", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "oci")
		if _, err := pullOCI(t.Context(), t, img.ref, dir); err != nil {
			t.Fatalf("pull %s: %v", img.ref, err)
		}
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			t.Fatalf("read layout: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatalf("read index.json: %v", err)
		}
		if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != img.digest.String() {
			t.Fatalf("layout manifests = %+v, want one with digest %s", im.Manifests, img.digest)
		}
		pulled, err := idx.Image(im.Manifests[0].Digest)
		if err != nil {
			t.Fatalf("open pulled image: %v", err)
		}
		m, err := pulled.Manifest()
		if err != nil {
			t.Fatalf("pulled manifest: %v", err)
		}
		var layers []digest.Digest
		for _, l := range m.Layers {
			layers = append(layers, digest.Digest(l.Digest.String()))
		}
		if !slices.Equal(layers, img.layers) || m.Config.Digest.String() != img.config.String() {
			t.Fatalf("pulled config %s layers %v, want %s %v", m.Config.Digest, layers, img.config, img.layers)
		}
	})

	t.Run("blobs are stored on disk under Dir", func(t *testing.T) {
		for _, d := range append([]digest.Digest{img.config}, img.layers...) {
			b, err := os.ReadFile(r.BlobPath(d))
			if err != nil {
				t.Fatalf("read blob %s: %v", d, err)
			}
			if got := digest.FromBytes(b); got != d {
				t.Fatalf("blob file %s has digest %s", d, got)
			}
		}
	})

	t.Run("unknown manifest is 404", func(t *testing.T) {
		resp := get(t, http.DefaultClient, http.MethodGet, "http://"+r.Addr()+"/v2/fcos/os/manifests/nope")
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
	})
}

func TestClose(t *testing.T) {
	t.Run("leaves no listener, goroutine or temporary dir", func(t *testing.T) {
		before := runtime.NumGoroutine()
		r, err := registry.Start(registry.Options{})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		tr := &http.Transport{}
		c := &http.Client{Transport: tr}
		resp := get(t, c, http.MethodGet, "http://"+r.Addr()+"/v2/")
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("ping status %d", resp.StatusCode)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		tr.CloseIdleConnections()
		if conn, err := net.DialTimeout("tcp", r.Addr(), time.Second); err == nil {
			conn.Close()
			t.Fatalf("%s still accepts connections after Close", r.Addr())
		}
		if _, err := os.Stat(r.Dir()); !os.IsNotExist(err) {
			t.Fatalf("temporary dir %s not removed: %v", r.Dir(), err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				t.Fatalf("goroutines: %d before, %d after Close\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second close: %v", err)
		}
	})

	t.Run("cuts short an injected delay", func(t *testing.T) {
		r, err := registry.Start(registry.Options{Dir: t.TempDir()})
		if err != nil {
			t.Fatalf("start: %v", err)
		}
		if err := r.SetFault(registry.Fault{Effect: registry.Delay, Latency: time.Minute}); err != nil {
			t.Fatalf("set fault: %v", err)
		}
		done := make(chan error, 1)
		go func() {
			resp, err := http.Get("http://" + r.Addr() + "/v2/")
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
		time.Sleep(200 * time.Millisecond) // let the request reach the delay
		start := time.Now()
		if err := r.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("Close took %v with a delayed request in flight", d)
		}
		<-done
	})
}
