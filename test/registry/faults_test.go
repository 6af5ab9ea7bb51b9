package registry_test

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/test/registry"
)

func TestFaults(t *testing.T) {
	r := startRegistry(t)
	img := pushImage(t, r, "fcos/os", 3, 4096)
	base := "http://" + r.Addr() + "/v2/fcos/os/"
	manifestURL := base + "manifests/v1"
	layer := img.layers[1]
	layerURL := base + "blobs/" + layer.String()
	set := func(t *testing.T, f registry.Fault) {
		t.Helper()
		if err := r.SetFault(f); err != nil {
			t.Fatalf("set fault: %v", err)
		}
		t.Cleanup(r.ClearFaults)
	}
	status := func(t *testing.T, url string) int {
		t.Helper()
		resp := get(t, http.DefaultClient, http.MethodGet, url)
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Run("error fault answers the next N matching requests with 500", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Error, Kind: registry.KindManifest, Count: 2})
		r.ResetAccessLog()
		got := []int{status(t, manifestURL), status(t, layerURL), status(t, manifestURL), status(t, manifestURL)}
		want := []int{500, 200, 500, 200}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("statuses %v, want %v", got, want)
			}
		}
		if log := r.AccessLog(); log[0].Fault != "error" || log[1].Fault != "" || log[3].Fault != "" {
			t.Fatalf("fault column of the access log: %+v", log)
		}
	})

	t.Run("error fault on a path substring hits every match until cleared", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Error, PathContains: layer.Encoded(), Status: http.StatusServiceUnavailable})
		for range 3 {
			if s := status(t, layerURL); s != http.StatusServiceUnavailable {
				t.Fatalf("status %d, want 503", s)
			}
		}
		if s := status(t, manifestURL); s != http.StatusOK {
			t.Fatalf("manifest status %d, want 200", s)
		}
		r.ClearFaults()
		if s := status(t, layerURL); s != http.StatusOK {
			t.Fatalf("status after ClearFaults %d, want 200", s)
		}
	})

	t.Run("containers/image pull reports the injected 500", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Error, Kind: registry.KindBlob})
		_, err := pullOCI(t.Context(), t, img.ref, filepath.Join(t.TempDir(), "oci"))
		if err == nil || !strings.Contains(err.Error(), "500") {
			t.Fatalf("pull error %v, want one mentioning HTTP 500", err)
		}
	})

	t.Run("delay fault slows only matching requests", func(t *testing.T) {
		const latency = 300 * time.Millisecond
		set(t, registry.Fault{Effect: registry.Delay, Kind: registry.KindManifest, Latency: latency})
		start := time.Now()
		if s := status(t, manifestURL); s != http.StatusOK {
			t.Fatalf("status %d", s)
		}
		if d := time.Since(start); d < latency {
			t.Fatalf("delayed manifest GET took %v, want >= %v", d, latency)
		}
		start = time.Now()
		status(t, layerURL)
		if d := time.Since(start); d >= latency {
			t.Fatalf("blob GET took %v although only manifests are delayed", d)
		}
	})

	t.Run("corrupt fault flips one byte and keeps the length", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Corrupt, PathContains: layer.Encoded()})
		stored, err := os.ReadFile(r.BlobPath(layer))
		if err != nil {
			t.Fatalf("read stored blob: %v", err)
		}
		resp := get(t, http.DefaultClient, http.MethodGet, layerURL)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		if len(got) != len(stored) || diffBytes(got, stored) != 1 {
			t.Fatalf("got %d bytes differing in %d places from the %d stored", len(got), diffBytes(got, stored), len(stored))
		}
	})

	t.Run("corrupted blob fails the pull with a digest mismatch", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Corrupt, PathContains: layer.Encoded()})
		_, err := pullOCI(t.Context(), t, img.ref, filepath.Join(t.TempDir(), "oci"))
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "digest") {
			t.Fatalf("pull error %v, want a digest mismatch", err)
		}
		t.Logf("pull error: %v", err)
	})

	t.Run("truncate fault cuts the body short of its Content-Length", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Truncate, PathContains: layer.Encoded(), TruncateAfter: 100})
		r.ResetAccessLog()
		resp := get(t, http.DefaultClient, http.MethodGet, layerURL)
		defer resp.Body.Close()
		got, err := io.ReadAll(resp.Body)
		if !errors.Is(err, io.ErrUnexpectedEOF) || len(got) != 100 || resp.ContentLength <= 100 {
			t.Fatalf("read %d of %d bytes, err %v; want 100 bytes then unexpected EOF", len(got), resp.ContentLength, err)
		}
		if log := r.AccessLog(); len(log) != 1 || log[0].Bytes != 100 || log[0].Fault != "truncate" {
			t.Fatalf("access log %+v, want one truncated entry of 100 bytes", log)
		}
	})

	t.Run("truncated blob on every attempt fails the pull", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Truncate, PathContains: layer.Encoded()})
		_, err := pullOCI(t.Context(), t, img.ref, filepath.Join(t.TempDir(), "oci"))
		if err == nil {
			t.Fatal("pull succeeded through truncated blobs")
		}
		t.Logf("pull error: %v", err)
	})

	t.Run("a single truncation is resumed with a range request", func(t *testing.T) {
		set(t, registry.Fault{Effect: registry.Truncate, PathContains: layer.Encoded(), Count: 1})
		r.ResetAccessLog()
		if _, err := pullOCI(t.Context(), t, img.ref, filepath.Join(t.TempDir(), "oci")); err != nil {
			t.Fatalf("pull: %v", err)
		}
		var statuses []int
		for _, a := range r.AccessLog() {
			if a.Kind == registry.KindBlob && a.Method == http.MethodGet && a.Digest == layer {
				statuses = append(statuses, a.Status)
			}
		}
		if len(statuses) != 2 || statuses[1] != http.StatusPartialContent {
			t.Fatalf("layer GET statuses %v, want [200 206]", statuses)
		}
	})

	t.Run("invalid faults are rejected", func(t *testing.T) {
		for _, f := range []registry.Fault{{}, {Effect: registry.Delay}, {Effect: registry.Error, Count: -1}} {
			if err := r.SetFault(f); err == nil {
				t.Errorf("SetFault(%+v) accepted", f)
			}
		}
	})
}

func diffBytes(a, b []byte) int {
	n := 0
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			n++
		}
	}
	return n + max(len(a), len(b)) - min(len(a), len(b))
}
