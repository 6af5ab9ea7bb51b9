package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"layerd.dev/layerd/rpmostree"
)

// fakeOnceHost records what `layerd once` asks rpm-ostree to do.
type fakeOnceHost struct {
	opened   bool
	staged   []string
	locked   []bool
	finalize []string
	closed   bool
}

func (f *fakeOnceHost) StageImage(_ context.Context, pinned string, opts rpmostree.RebaseOptions) (*rpmostree.StageResult, error) {
	f.staged = append(f.staged, pinned)
	f.locked = append(f.locked, opts.LockFinalization)
	opts.Progress(rpmostree.Message{Text: "Pulling manifest"})
	return &rpmostree.StageResult{Deployment: &rpmostree.Deployment{ID: "fcos-abc.0"}, Started: true}, nil
}

func (f *fakeOnceHost) FinalizeDeployment(_ context.Context, checksum string, _ rpmostree.FinalizeOptions) error {
	f.finalize = append(f.finalize, checksum)
	return nil
}

func (f *fakeOnceHost) Close() error { f.closed = true; return nil }

// TestOnceCommand runs `layerd once` against the real loopback registry with signed and
// unsigned images and a recording rpm-ostree; the box test (test/e2e/once_test.go) runs it
// against a node's rpm-ostreed.
func TestOnceCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	trust, signed, unsigned := signedAndUnsigned(ctx, t)
	run := func(args ...string) (*fakeOnceHost, string, int) {
		host := &fakeOnceHost{}
		open := func(context.Context, *zap.Logger) (onceHost, error) { host.opened = true; return host, nil }
		var out, errb bytes.Buffer
		cmd := newOnceCmd(zap.NewNop(), open)
		cmd.SetOut(&out)
		cmd.SetErr(&errb)
		cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
		cmd.SetArgs(append([]string{"--policy", trust.PolicyPath, "--registries-d", trust.RegistriesDDir,
			"--registries-conf", trust.RegistriesConfPath, "--arch", "amd64"}, args...))
		code := exitCode(cmd.ExecuteContext(ctx))
		return host, out.String() + errb.String(), code
	}

	t.Run("a_signed_image_is_staged_by_digest_with_finalization_locked", func(t *testing.T) {
		host, out, code := run(signed.Ref)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		if len(host.staged) != 1 || host.staged[0] != signed.Pinned || !host.locked[0] || len(host.finalize) != 0 || !host.closed {
			t.Fatalf("host %+v, want %s staged locked and not finalized", host, signed.Pinned)
		}
		for _, want := range []string{"staging " + signed.Pinned, "Pulling manifest", "staged " + signed.Digest.String()} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("reboot_stages_unlocked_and_finalizes_the_manifest_digest", func(t *testing.T) {
		host, out, code := run("--reboot", signed.Ref)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, out)
		}
		if len(host.staged) != 1 || host.locked[0] || len(host.finalize) != 1 || host.finalize[0] != signed.Digest.String() {
			t.Fatalf("host %+v, want finalize %s", host, signed.Digest)
		}
	})
	t.Run("an_unsigned_image_is_rejected_with_exit_1_SignatureRejected_and_nothing_staged", func(t *testing.T) {
		host, out, code := run(unsigned.Ref)
		if code != 1 || !strings.Contains(out, "SignatureRejected") {
			t.Fatalf("exit %d, output %s", code, out)
		}
		if host.opened || len(host.staged) != 0 {
			t.Fatalf("rpm-ostree used for a rejected image: %+v", host)
		}
	})
	t.Run("an_invalid_reference_is_bad_usage_with_exit_2", func(t *testing.T) {
		if host, out, code := run("Not A Reference!"); code != 2 || host.opened {
			t.Fatalf("exit %d, opened %v, output %s", code, host.opened, out)
		}
	})
	t.Run("no_image_is_bad_usage_with_exit_2", func(t *testing.T) {
		if _, out, code := run(); code != 2 {
			t.Fatalf("exit %d, output %s", code, out)
		}
	})
}
