package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
)

type recordedKnobs struct{ calls []string }

func (r *recordedKnobs) FailNextTransaction(m string) { r.calls = append(r.calls, "fail:"+m) }
func (r *recordedKnobs) StallTransactions()           { r.calls = append(r.calls, "stall") }
func (r *recordedKnobs) ReleaseTransactions()         { r.calls = append(r.calls, "release") }
func (r *recordedKnobs) CrashDuringNextTransaction()  { r.calls = append(r.calls, "crash") }
func (r *recordedKnobs) FailNextCallsWithNoReply(n int) {
	r.calls = append(r.calls, fmt.Sprint("noreply:", n))
}

func TestApplyControl(t *testing.T) {
	t.Run("runs_every_line_in_order", func(t *testing.T) {
		k := &recordedKnobs{}
		if err := applyControl("stall\nfail-next error: pulling image: 500\n\nrelease\ncrash\nnoreply 2\n", k); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(k.calls, ","); got != "stall,fail:error: pulling image: 500,release,crash,noreply:2" {
			t.Fatalf("calls = %s", got)
		}
	})
	t.Run("rejects_unknown_commands", func(t *testing.T) {
		if err := applyControl("explode", &recordedKnobs{}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestParseFlags(t *testing.T) {
	t.Run("derives_run_dir_and_control_from_the_socket", func(t *testing.T) {
		c, err := parseFlags([]string{"--bus-address", "unix:path=/x", "--sysroot", "/s", "--txn-socket", "/n/run/t.sock"})
		if err != nil {
			t.Fatal(err)
		}
		if c.runDir != "/n/run" || c.control != "/n/run/rpm-ostreed.control" {
			t.Fatalf("config = %+v", c)
		}
	})
	t.Run("requires_bus_and_sysroot", func(t *testing.T) {
		if _, err := parseFlags([]string{"--sysroot", "/s"}); err == nil {
			t.Fatal("no error")
		}
	})
}

func TestRebootHook(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "ran")
	requested := make(chan struct{}, 1)
	if err := rebootHook(dir, "touch "+out, requested, zap.NewNop())(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-requested:
	default:
		t.Fatal("the reboot request was not signalled to main")
	}
	for _, f := range []string{out, filepath.Join(dir, "rpm-ostreed-reboot-requested")} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
	}
}
