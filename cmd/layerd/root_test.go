package main

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestRoot(t *testing.T) {
	t.Run("version_prints_the_version", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		cmd.SetArgs([]string{"version"})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("version: %v", err)
		}
		if !strings.HasPrefix(out.String(), "layerd ") {
			t.Fatalf("unexpected output %q", out.String())
		}
	})
	t.Run("an_unknown_flag_is_a_usage_error_with_exit_code_2", func(t *testing.T) {
		var out, errb bytes.Buffer
		cmd := newRootCmd(&out, &errb, zap.NewNop())
		cmd.SetArgs([]string{"version", "--nope"})
		err := cmd.Execute()
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("want usageError, got %v", err)
		}
		if code := exitCode(err); code != 2 {
			t.Fatalf("exit code %d, want 2", code)
		}
	})
	t.Run("other_errors_exit_1", func(t *testing.T) {
		if code := exitCode(errors.New("boom")); code != 1 {
			t.Fatalf("exit code %d, want 1", code)
		}
		if code := exitCode(nil); code != 0 {
			t.Fatalf("exit code %d, want 0", code)
		}
	})
}
