package image_test

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
)

func TestReport(t *testing.T) {
	accepted := &image.Report{
		SchemaVersion: image.ReportSchemaVersion, Input: "quay.io/x/os:41", Reference: "quay.io/x/os:41",
		Repository: "quay.io/x/os", Pinned: "quay.io/x/os@" + dgst, ManifestDigest: dgst, IndexDigest: dgst,
		Platform: &image.Platform{OS: "linux", Arch: "arm64", Variant: "v8"}, Version: "41.1",
		Labels: map[string]string{"containers.bootc": "1"}, Bootable: "containers.bootc=1", Size: 10, Layers: 2,
		ConfigDigest: dgst, Accepted: true,
		Signature: &image.Verdict{Accepted: true, Scope: "docker:quay.io/x", Requirements: json.RawMessage(`[{"type":"sigstoreSigned"}]`),
			Types: []string{"sigstoreSigned"}, Signed: "index", SignedDigest: dgst},
	}
	t.Run("json_keys_are_the_documented_schema", func(t *testing.T) {
		raw, err := json.Marshal(accepted)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		var keys []string
		for k := range m {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		want := []string{"accepted", "bootable", "configDigest", "indexDigest", "input", "labels", "layers", "manifestDigest",
			"pinned", "platform", "reference", "repository", "schemaVersion", "signature", "size", "version"}
		if !slices.Equal(keys, want) {
			t.Errorf("keys %v\nwant %v", keys, want)
		}
		var sig map[string]json.RawMessage
		if err := json.Unmarshal(m["signature"], &sig); err != nil || len(sig) != 6 /* message only on rejection */ {
			t.Errorf("signature keys %v %v", sig, err)
		}
	})
	t.Run("text_names_the_verdict_and_the_reason", func(t *testing.T) {
		var b bytes.Buffer
		if err := accepted.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{"pinned:", "linux/arm64/v8", "signature on the index", "result:          accepted"} {
			if !strings.Contains(b.String(), s) {
				t.Errorf("missing %q in\n%s", s, b.String())
			}
		}
		rejected := &image.Report{Input: "x", Reason: reason.SignatureRejected, Message: "SignatureRejected: image x: no"}
		b.Reset()
		if err := rejected.WriteText(&b); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(b.String(), "rejected: SignatureRejected") {
			t.Errorf("got\n%s", b.String())
		}
	})
}

var _ image.Verifier = (*image.Fake)(nil)

func TestFake(t *testing.T) {
	t.Run("records_calls_and_succeeds_by_default", func(t *testing.T) {
		f := &image.Fake{}
		r, err := f.Resolve(t.Context(), "x")
		if err == nil {
			_, err = f.Verify(t.Context(), r)
		}
		if err == nil {
			_, err = f.Validate(t.Context(), r)
		}
		if err != nil || !slices.Equal(f.Calls(), []string{"Resolve", "Verify", "Validate"}) {
			t.Fatalf("%v %v", f.Calls(), err)
		}
	})
}
