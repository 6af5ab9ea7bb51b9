package image_test

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	t.Run("an_image_without_bootc_or_ostree_labels_is_NotBootable", func(t *testing.T) {
		img := w.base(t, "fcos/app", "v1", "60.0", func(s *osimage.Spec) { s.NotBootable = true })
		sign(t, img.Ref, trustedKeys)
		rep, err := w.client(t).Inspect(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.NotBootable || !strings.Contains(err.Error(), "containers.bootc") {
			t.Fatalf("code %s: %v", c, err)
		}
		if rep.Version != "60.0" || rep.Signature == nil || !rep.Signature.Accepted {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("a_layered_image_keeps_the_base_labels_and_reports_its_own_version", func(t *testing.T) {
		base := w.base(t, "fcos/os", "base", "60.1")
		layered, err := w.b.Layered(ctx, base, osimage.Spec{Repo: "fcos/custom", Tag: "v2", Version: "60.1.1",
			Labels: map[string]string{"com.example.team": "infra"}})
		if err != nil {
			t.Fatal(err)
		}
		sign(t, layered.Ref, trustedKeys)
		rep, err := w.client(t).Inspect(ctx, layered.Ref)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Version != "60.1.1" || rep.Bootable != "containers.bootc=1" || rep.Labels["com.example.team"] != "infra" || rep.Layers != 4 {
			t.Errorf("report %+v", rep)
		}
	})
	t.Run("a_config_larger_than_the_limit_is_NotBootable_without_fetching_it", func(t *testing.T) {
		img := w.base(t, "fcos/os", "bigconfig", "60.2")
		opts := w.options(t)
		opts.MaxConfigSize = 16
		w.reg.ResetAccessLog()
		_, err := newClient(t, opts).Validate(ctx, mustResolve(t, newClient(t, opts), img.Ref))
		if c := codeOf(t, err); c != reason.NotBootable {
			t.Fatalf("code %s: %v", c, err)
		}
		if slices.Contains(w.reg.BlobsFetched(), img.Config) {
			t.Error("the oversized config was fetched")
		}
	})
}

func TestOnlyMetadataIsFetched(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	amd := w.base(t, "fcos/os", "amd", "70.0")
	arm := w.base(t, "fcos/os", "arm", "70.0", func(s *osimage.Spec) { s.Arch = "arm64" })
	idx := w.index(t, "fcos/os", "multi", amd, arm)
	sign(t, idx.Ref, trustedKeys)
	for _, tc := range []struct{ name, ref string }{
		{"for_a_single_image", amd.Ref},
		{"for_a_multi_arch_index", idx.Ref},
	} {
		t.Run("resolve_verify_validate_fetch_no_layer_"+tc.name, func(t *testing.T) {
			w.reg.ResetAccessLog()
			if _, err := w.client(t).Inspect(ctx, tc.ref); err != nil {
				t.Fatal(err)
			}
			layers := map[digest.Digest]bool{}
			for _, img := range []*osimage.Image{amd, arm} {
				for _, l := range img.Layers {
					layers[l] = true
				}
			}
			for _, d := range w.reg.BlobsFetched() {
				if layers[d] {
					t.Errorf("layer %s was fetched", d)
				}
			}
			if !slices.Contains(w.reg.BlobsFetched(), amd.Config) {
				t.Error("the config was not fetched")
			}
			n, reqs := bytesServed(w.reg)
			t.Logf("inspect %s: %d requests, %d bytes served", tc.name, reqs, n)
		})
	}
}

func TestRegistryFaults(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	ctx := t.Context()
	img := w.base(t, "fcos/os", "v1", "80.0")
	sign(t, img.Ref, trustedKeys)

	t.Run("an_unknown_tag_is_ImageNotFound", func(t *testing.T) {
		_, err := w.client(t).Resolve(ctx, w.reg.Addr()+"/fcos/os:nope")
		if c := codeOf(t, err); c != reason.ImageNotFound {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("an_unknown_repository_is_ImageNotFound", func(t *testing.T) {
		_, err := w.client(t).Resolve(ctx, w.reg.Addr()+"/nothing/here:v1")
		if c := codeOf(t, err); c != reason.ImageNotFound {
			t.Fatalf("code %s: %v", c, err)
		}
	})
	t.Run("a_registry_answering_500_twice_then_ok_is_accepted_after_retries", func(t *testing.T) {
		defer w.reg.ClearFaults()
		if err := w.reg.SetFault(registry.Fault{Effect: registry.Error, Kind: registry.KindManifest, Count: 2}); err != nil {
			t.Fatal(err)
		}
		opts := w.options(t)
		clock := newFakeClock()
		opts.Clock = clock
		rep, err := newClient(t, opts).Inspect(ctx, img.Ref)
		if err != nil || !rep.Accepted {
			t.Fatalf("%+v %v", rep, err)
		}
		if len(clock.Delays()) != 2 {
			t.Errorf("retried %d times, want 2", len(clock.Delays()))
		}
	})
	t.Run("a_registry_always_answering_500_is_RegistryUnavailable_within_the_deadline", func(t *testing.T) {
		defer w.reg.ClearFaults()
		if err := w.reg.SetFault(registry.Fault{Effect: registry.Error, Status: http.StatusBadGateway}); err != nil {
			t.Fatal(err)
		}
		opts := w.options(t)
		opts.Clock = nil // real time
		opts.Backoff = image.Backoff{Attempts: 1000, Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond}
		dctx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := newClient(t, opts).Resolve(dctx, img.Ref)
		if c := codeOf(t, err); c != reason.RegistryUnavailable {
			t.Fatalf("code %s: %v", c, err)
		}
		if el := time.Since(start); el > 2500*time.Millisecond {
			t.Errorf("gave up after %v, well past the 1.5s deadline", el)
		}
	})
	t.Run("manifest_bytes_not_matching_the_pinned_digest_are_DigestMismatch_without_retry", func(t *testing.T) {
		defer w.reg.ClearFaults()
		if err := w.reg.SetFault(registry.Fault{Effect: registry.Corrupt, Kind: registry.KindManifest,
			PathContains: img.Digest.Encoded()}); err != nil {
			t.Fatal(err)
		}
		opts := w.options(t)
		clock := newFakeClock()
		opts.Clock = clock
		_, err := newClient(t, opts).Resolve(ctx, img.Pinned)
		if c := codeOf(t, err); c != reason.DigestMismatch {
			t.Fatalf("code %s: %v", c, err)
		}
		if len(clock.Delays()) != 0 {
			t.Error("a digest mismatch was retried")
		}
	})
	t.Run("a_config_not_matching_its_digest_is_DigestMismatch", func(t *testing.T) {
		defer w.reg.ClearFaults()
		c := w.client(t)
		res := mustResolve(t, c, img.Ref)
		if err := w.reg.SetFault(registry.Fault{Effect: registry.Corrupt, Kind: registry.KindBlob,
			PathContains: img.Config.Encoded()}); err != nil {
			t.Fatal(err)
		}
		_, err := c.Validate(ctx, res)
		if code := codeOf(t, err); code != reason.DigestMismatch {
			t.Fatalf("code %s: %v", code, err)
		}
	})
	t.Run("a_500_on_the_signature_lookup_is_retried_not_a_rejection", func(t *testing.T) {
		defer w.reg.ClearFaults()
		if err := w.reg.SetFault(registry.Fault{Effect: registry.Error, Kind: registry.KindManifest,
			PathContains: ".sig", Count: 1}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.client(t).Inspect(ctx, img.Ref); err != nil {
			t.Fatal(err)
		}
	})
}

func TestRegistriesConf(t *testing.T) {
	w := newWorld(t)
	ctx := t.Context()
	img := w.base(t, "fcos/os", "v1", "90.0")
	sign(t, img.Ref, trustedKeys)

	t.Run("a_plain_http_registry_marked_insecure_via_CONTAINERS_REGISTRIES_CONF_works", func(t *testing.T) {
		t.Setenv("CONTAINERS_REGISTRIES_CONF", w.trust.RegistriesConfPath)
		opts := w.options(t)
		opts.RegistriesConfPath, opts.RegistriesConfDir = "", ""
		if _, err := newClient(t, opts).Inspect(ctx, img.Ref); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("a_plain_http_registry_not_marked_insecure_is_refused_without_retry", func(t *testing.T) {
		opts := w.options(t)
		opts.RegistriesConfPath = writeFile(t, t.TempDir(), "registries.conf", "unqualified-search-registries = []\n")
		clock := newFakeClock()
		opts.Clock = clock
		_, err := newClient(t, opts).Resolve(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.RegistryUnavailable || len(clock.Delays()) != 0 {
			t.Fatalf("code %s after %d retries: %v", c, len(clock.Delays()), err)
		}
	})
	t.Run("a_blocked_registry_is_refused_before_any_request", func(t *testing.T) {
		opts := w.options(t)
		opts.RegistriesConfPath = writeFile(t, t.TempDir(), "registries.conf",
			fmt.Sprintf("[[registry]]\nlocation = %q\ninsecure = true\nblocked = true\n", w.reg.Addr()))
		w.reg.ResetAccessLog()
		_, err := newClient(t, opts).Resolve(ctx, img.Ref)
		if c := codeOf(t, err); c != reason.RegistryBlocked || !strings.Contains(err.Error(), "blocked") {
			t.Fatalf("code %s: %v", c, err)
		}
		if n := len(w.reg.AccessLog()); n != 0 {
			t.Errorf("%d requests reached the blocked registry", n)
		}
	})
	t.Run("a_mirror_is_used_and_its_signatures_verified_against_the_logical_name", func(t *testing.T) {
		mirror := startRegistry(t)
		mb := &osimage.Builder{Registry: mirror.Addr()}
		const primary = "registry.invalid" // never reachable: only the mirror can serve
		mimg, err := mb.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "mirrored", Version: "90.1"})
		if err != nil {
			t.Fatal(err)
		}
		mw := &world{reg: mirror, trust: w.trust}
		mw.signOnly(t, mimg.Pinned, primary+"/fcos/os:mirrored", trustedKeys)
		opts := w.options(t)
		opts.RegistriesConfPath = writeFile(t, t.TempDir(), "registries.conf", fmt.Sprintf(
			"unqualified-search-registries = []\n[[registry]]\nlocation = %q\n[[registry.mirror]]\nlocation = %q\ninsecure = true\n",
			primary, mirror.Addr()))
		opts.PolicyPath = w.writePolicy(t, `{"default":[{"type":"reject"}],"transports":{"docker":{"`+primary+
			`":[{"type":"sigstoreSigned","keyPath":"KEY","signedIdentity":{"type":"matchRepoDigestOrExact"}}]}}}`)
		mirror.ResetAccessLog()
		rep, err := newClient(t, opts).Inspect(ctx, primary+"/fcos/os:mirrored")
		if err != nil {
			t.Fatal(err)
		}
		if rep.Pinned != primary+"/fcos/os@"+mimg.Digest.String() {
			t.Errorf("pinned %s: must name the logical registry, as rpm-ostree pulls it through the same file", rep.Pinned)
		}
		if len(mirror.AccessLog()) == 0 {
			t.Error("the mirror served nothing")
		}
	})
	t.Run("a_short_name_resolves_through_the_single_search_registry", func(t *testing.T) {
		opts := w.options(t)
		opts.RegistriesConfPath = writeFile(t, t.TempDir(), "registries.conf", fmt.Sprintf(
			"unqualified-search-registries = [%q]\n[[registry]]\nlocation = %q\ninsecure = true\n", w.reg.Addr(), w.reg.Addr()))
		opts.RegistriesConfDir = filepath.Join(t.TempDir(), "none")
		rep, err := newClient(t, opts).Inspect(ctx, "fcos/os:v1")
		if err != nil || rep.Pinned != img.Pinned {
			t.Fatalf("%+v %v", rep, err)
		}
	})
}
