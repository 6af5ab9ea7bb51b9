package main

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"
)

func TestAgentCmd(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	never := func() bool { return false }
	base := agentFlags{hostRoot: "/host", namespace: "layerd-system", logFormat: "json", logJournal: "auto",
		drainTimeout: 10 * time.Minute, slotLease: 5 * time.Minute, registerDriver: true}

	t.Run("takes_the_node_name_from_the_downward_API_env", func(t *testing.T) {
		s, err := base.settings(env(map[string]string{nodeNameEnv: "node-7"}), never)
		if err != nil {
			t.Fatal(err)
		}
		if s.nodeName != "node-7" {
			t.Errorf("node name %q, want node-7", s.nodeName)
		}
		if s.sysroot != "/host/sysroot" {
			t.Errorf("sysroot %q, want /host/sysroot", s.sysroot)
		}
	})
	t.Run("a_flag_wins_over_the_env", func(t *testing.T) {
		f := base
		f.nodeName = "flag-node"
		s, err := f.settings(env(map[string]string{nodeNameEnv: "env-node"}), never)
		if err != nil || s.nodeName != "flag-node" {
			t.Fatalf("node name %q, err %v; want flag-node", s.nodeName, err)
		}
	})
	t.Run("without_a_node_name_it_is_a_usage_error", func(t *testing.T) {
		_, err := base.settings(env(nil), never)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("want a usage error, got %v", err)
		}
	})
	t.Run("log_journal_auto_follows_the_journal_socket", func(t *testing.T) {
		f := base
		f.nodeName = "n"
		on, err := f.settings(env(nil), func() bool { return true })
		if err != nil || !on.journal {
			t.Errorf("auto with a journal: journal %v, err %v", on.journal, err)
		}
		f.logJournal = "off"
		off, err := f.settings(env(nil), func() bool { return true })
		if err != nil || off.journal {
			t.Errorf("off: journal %v, err %v", off.journal, err)
		}
		f.logJournal = "sometimes"
		if _, err := f.settings(env(nil), never); err == nil {
			t.Errorf("--log-journal sometimes accepted")
		}
	})
	t.Run("bad_durations_and_limits_are_usage_errors", func(t *testing.T) {
		for name, edit := range map[string]func(*agentFlags){
			"zero drain timeout":        func(f *agentFlags) { f.drainTimeout = 0 },
			"negative drain timeout":    func(f *agentFlags) { f.drainTimeout = -time.Second },
			"lease below the minimum":   func(f *agentFlags) { f.slotLease = 2 * time.Second },
			"lease in fractions":        func(f *agentFlags) { f.slotLease = 4500 * time.Millisecond },
			"negative hostfs max files": func(f *agentFlags) { f.hostfsMaxFiles = -1 },
		} {
			f := base
			f.nodeName = "n"
			edit(&f)
			var ue *usageError
			if _, err := f.settings(env(nil), never); !errors.As(err, &ue) {
				t.Errorf("%s: want a usage error, got %v", name, err)
			}
		}
	})
	t.Run("a_bad_log_format_is_a_usage_error", func(t *testing.T) {
		f := base
		f.nodeName, f.logFormat = "n", "xml"
		_, err := f.settings(env(nil), never)
		var ue *usageError
		if !errors.As(err, &ue) {
			t.Fatalf("want a usage error, got %v", err)
		}
	})
	t.Run("the_agent_command_has_the_flags_of_the_issue", func(t *testing.T) {
		var out, errb bytes.Buffer
		root := newRootCmd(&out, &errb, zap.NewNop())
		cmd, _, err := root.Find([]string{"agent"})
		if err != nil || cmd.Name() != "agent" {
			t.Fatalf("no agent command: %v", err)
		}
		for _, name := range []string{"node-name", "kubeconfig", "host-root", "policy", "registries-d", "registries-conf",
			"pull-secret", "namespace", "metrics-addr", "health-addr", "log-format", "log-journal",
			"drain-timeout", "slot-lease-duration", "register-driver", "hostfs-max-files", "hostfs-max-bytes"} {
			if cmd.Flags().Lookup(name) == nil {
				t.Errorf("flag --%s missing", name)
			}
		}
	})
}
