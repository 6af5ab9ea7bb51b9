package main

import (
	"context"
	"path/filepath"
	"testing"

	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// signedAndUnsigned starts a loopback registry (closed when the test ends) holding a signed and
// an unsigned base OS image, and returns the trust files that accept only the signed one.
func signedAndUnsigned(ctx context.Context, t *testing.T) (trust osimage.TrustFiles, signed, unsigned *osimage.Image) {
	t.Helper()
	reg, err := registry.Start(registry.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Errorf("closing the registry: %v", err)
		}
	})
	dir := t.TempDir()
	keys, err := osimage.GenerateKeys(filepath.Join(dir, "keys"), "pass")
	if err != nil {
		t.Fatal(err)
	}
	if trust, err = osimage.WriteTrust(filepath.Join(dir, "trust"), reg.Addr(), keys); err != nil {
		t.Fatal(err)
	}
	b := &osimage.Builder{Registry: reg.Addr()}
	if signed, err = b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "signed", Version: "41.1"}); err != nil {
		t.Fatal(err)
	}
	if err := osimage.Sign(ctx, signed.Pinned, keys); err != nil {
		t.Fatal(err)
	}
	if unsigned, err = b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "unsigned", Version: "41.2"}); err != nil {
		t.Fatal(err)
	}
	return trust, signed, unsigned
}
