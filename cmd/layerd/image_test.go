package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// TestImageInspectCommand runs `layerd image inspect` against the real loopback registry with
// signed and unsigned images and checks output and exit codes.
func TestImageInspectCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	trust, signed, unsigned := signedAndUnsigned(ctx, t)
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		base := []string{"image", "inspect", "--policy", trust.PolicyPath, "--registries-d", trust.RegistriesDDir,
			"--registries-conf", trust.RegistriesConfPath, "--arch", "amd64"}
		cmd.SetArgs(append(base, args...))
		err := cmd.ExecuteContext(ctx)
		return out.String() + errb.String(), exitCode(err)
	}

	t.Run("a_signed_image_is_accepted_with_exit_0_and_its_pinned_digest", func(t *testing.T) {
		out, code := run("--json", signed.Ref)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		var rep struct {
			Pinned         string `json:"pinned"`
			ManifestDigest string `json:"manifestDigest"`
			Version        string `json:"version"`
			Accepted       bool   `json:"accepted"`
		}
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out)
		}
		if !rep.Accepted || rep.Pinned != signed.Pinned || rep.ManifestDigest != signed.Digest.String() || rep.Version != "41.1" {
			t.Fatalf("report %+v, want pinned %s", rep, signed.Pinned)
		}
	})
	t.Run("an_unsigned_image_is_rejected_with_exit_1_and_SignatureRejected", func(t *testing.T) {
		out, code := run(unsigned.Ref)
		if code != 1 || !strings.Contains(out, "SignatureRejected") {
			t.Fatalf("exit %d, output %s", code, out)
		}
	})
	t.Run("an_invalid_reference_is_bad_usage_with_exit_2", func(t *testing.T) {
		if out, code := run("Not A Reference!"); code != 2 {
			t.Fatalf("exit %d, output %s", code, out)
		}
	})
}
