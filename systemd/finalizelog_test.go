package systemd_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"layerd.dev/layerd/systemd"
)

// fakeJournalctl answers journalctl's --list-boots and --boot=-1 queries from canned output.
type fakeJournalctl struct {
	boots, entries string
	err            error
	calls          [][]string
}

var _ systemd.Runner = (*fakeJournalctl)(nil)

func (f *fakeJournalctl) Output(_ context.Context, name string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, append([]string{name}, args...))
	if f.err != nil {
		return nil, f.err
	}
	for _, a := range args {
		switch a {
		case "--list-boots":
			return []byte(f.boots), nil
		case "--boot=-1":
			return []byte(f.entries), nil
		}
	}
	return nil, errors.New("unexpected journalctl call")
}

const twoBoots = " -1 6e1f0e2a1c734d8e9b0f4f3a2c1d0e9f Mon 2025-01-06 10:00:00 UTC Mon 2025-01-06 10:05:00 UTC\n" +
	"  0 a1b2c3d4e5f60718293a4b5c6d7e8f90 Mon 2025-01-06 10:05:03 UTC Mon 2025-01-06 10:06:00 UTC\n"

// Entries as journalctl -o json prints them for a failed ExecStop of the finalize unit at
// shutdown: systemd's notices about the unit and the unit's own stderr.
const failedFinalize = `{"MESSAGE":"Stopping ostree-finalize-staged.service - OSTree Finalize Staged Deployment...","PRIORITY":"6","UNIT":"ostree-finalize-staged.service","_PID":"1"}
{"MESSAGE":"Finalizing staged deployment","PRIORITY":"6","_SYSTEMD_UNIT":"ostree-finalize-staged.service"}
{"MESSAGE":"error: mkdir(boot/loader.0): Operation not permitted","PRIORITY":"6","_SYSTEMD_UNIT":"ostree-finalize-staged.service"}
{"MESSAGE":"ostree-finalize-staged.service: Control process exited, code=exited, status=1/FAILURE","PRIORITY":"5","UNIT":"ostree-finalize-staged.service","_PID":"1"}
{"MESSAGE":"ostree-finalize-staged.service: Failed with result 'exit-code'.","PRIORITY":"4","MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","UNIT_RESULT":"exit-code","UNIT":"ostree-finalize-staged.service","_PID":"1"}
`

const cleanFinalize = `{"MESSAGE":"Stopping ostree-finalize-staged.service...","PRIORITY":"6","UNIT":"ostree-finalize-staged.service"}
{"MESSAGE":"Copying /etc changes: 2 modified, 0 removed, 3 added","PRIORITY":"6","_SYSTEMD_UNIT":"ostree-finalize-staged.service"}
{"MESSAGE":"ostree-finalize-staged.service: Deactivated successfully.","PRIORITY":"6","UNIT":"ostree-finalize-staged.service"}
`

func TestJournalctlFinalizeLog(t *testing.T) {
	ctx := context.Background()
	newLog := func(t *testing.T, f *fakeJournalctl) *systemd.JournalctlFinalizeLog {
		t.Helper()
		l, err := systemd.NewJournalctlFinalizeLog(t.TempDir(), f)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}

	t.Run("a_failed_finalization_is_its_error_lines_and_the_unit_result", func(t *testing.T) {
		f := &fakeJournalctl{boots: twoBoots, entries: failedFinalize}
		msg, err := newLog(t, f).PreviousBootFinalizeError(ctx)
		want := "error: mkdir(boot/loader.0): Operation not permitted; unit result: exit-code"
		if err != nil || msg != want {
			t.Fatalf("got %q, %v; want %q", msg, err, want)
		}
		last := strings.Join(f.calls[len(f.calls)-1], " ")
		for _, arg := range []string{"journalctl ", "--directory=", "--boot=-1", "--unit=ostree-finalize-staged.service", "--output=json"} {
			if !strings.Contains(last, arg) {
				t.Errorf("journalctl call %q lacks %q", last, arg)
			}
		}
	})
	t.Run("a_clean_finalization_is_no_error", func(t *testing.T) {
		msg, err := newLog(t, &fakeJournalctl{boots: twoBoots, entries: cleanFinalize}).PreviousBootFinalizeError(ctx)
		if err != nil || msg != "" {
			t.Fatalf("got %q, %v; want none", msg, err)
		}
	})
	t.Run("a_failed_result_without_output_is_still_reported", func(t *testing.T) {
		entries := `{"MESSAGE":"ostree-finalize-staged.service: Failed with result 'timeout'.","PRIORITY":"4","MESSAGE_ID":"d9b373ed55a64feb8242e02dbe79a49c","UNIT_RESULT":"timeout"}` + "\n"
		msg, err := newLog(t, &fakeJournalctl{boots: twoBoots, entries: entries}).PreviousBootFinalizeError(ctx)
		if err != nil || msg != "unit result: timeout" {
			t.Fatalf("got %q, %v", msg, err)
		}
	})
	t.Run("a_message_that_is_not_UTF-8_arrives_as_bytes_and_is_read", func(t *testing.T) {
		// "error: x\xff" as journalctl encodes it: an array of byte values.
		entries := `{"MESSAGE":[101,114,114,111,114,58,32,120,255],"PRIORITY":"3","_SYSTEMD_UNIT":"ostree-finalize-staged.service"}` + "\n"
		msg, err := newLog(t, &fakeJournalctl{boots: twoBoots, entries: entries}).PreviousBootFinalizeError(ctx)
		if err != nil || msg != "error: x\xff" {
			t.Fatalf("got %q, %v", msg, err)
		}
	})
	t.Run("a_journal_that_starts_with_the_running_boot_has_nothing_to_say", func(t *testing.T) {
		f := &fakeJournalctl{boots: "  0 a1b2c3d4e5f60718293a4b5c6d7e8f90 Mon 2025-01-06 10:05:03 UTC Mon 2025-01-06 10:06:00 UTC\n", entries: failedFinalize}
		msg, err := newLog(t, f).PreviousBootFinalizeError(ctx)
		if err != nil || msg != "" || len(f.calls) != 1 {
			t.Fatalf("got %q, %v after calls %v", msg, err, f.calls)
		}
	})
	t.Run("a_host_without_a_persistent_journal_has_nothing_to_say", func(t *testing.T) {
		f := &fakeJournalctl{boots: twoBoots, entries: failedFinalize}
		l, err := systemd.NewJournalctlFinalizeLog(filepath.Join(t.TempDir(), "missing"), f)
		if err != nil {
			t.Fatal(err)
		}
		if msg, err := l.PreviousBootFinalizeError(ctx); err != nil || msg != "" || len(f.calls) != 0 {
			t.Fatalf("got %q, %v after calls %v", msg, err, f.calls)
		}
	})
	t.Run("journalctl_failing_is_an_error", func(t *testing.T) {
		_, err := newLog(t, &fakeJournalctl{err: errors.New("exit status 1: boom")}).PreviousBootFinalizeError(ctx)
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("an_entry_that_does_not_decode_is_passed_over_and_the_others_still_count", func(t *testing.T) {
		odd := `{"MESSAGE":"x","PRIORITY":["3","4"],"_SYSTEMD_UNIT":"ostree-finalize-staged.service"}` + "\n-- No entries --\n"
		msg, err := newLog(t, &fakeJournalctl{boots: twoBoots, entries: odd + failedFinalize}).PreviousBootFinalizeError(ctx)
		if err != nil || !strings.Contains(msg, "unit result: exit-code") {
			t.Fatalf("got %q, %v; want the failure read from the entries that decode", msg, err)
		}
	})
	t.Run("the_constructor_rejects_a_missing_directory_or_runner", func(t *testing.T) {
		if _, err := systemd.NewJournalctlFinalizeLog("", &fakeJournalctl{}); err == nil {
			t.Error("empty directory accepted")
		}
		if _, err := systemd.NewJournalctlFinalizeLog("/var/log/journal", nil); err == nil {
			t.Error("nil runner accepted")
		}
	})
}
