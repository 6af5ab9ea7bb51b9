package updaters_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/systemd"
	"layerd.dev/layerd/test/rpmostreed/server"
)

// host is a host root and a driver file for one test.
type host struct {
	root, driverFile string
	units            *systemd.FakeUnits
}

func newHost(t *testing.T) *host {
	t.Helper()
	dir := t.TempDir()
	return &host{root: filepath.Join(dir, "host"), driverFile: filepath.Join(dir, "run", "rpm-ostree", "update-driver.gv"),
		units: &systemd.FakeUnits{States: map[string]systemd.UnitState{}}}
}

func (h *host) register(t *testing.T, name, unit string) {
	t.Helper()
	writeFile(t, h.driverFile, server.EncodeDriverInfo(name, unit))
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (h *host) check(t *testing.T, p updaters.Policy) updaters.Report {
	t.Helper()
	d, err := updaters.New(updaters.Options{DriverFile: h.driverFile, HostRoot: h.root, Units: h.units})
	if err != nil {
		t.Fatal(err)
	}
	r, err := d.Check(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

var running = systemd.UnitState{LoadState: "loaded", ActiveState: "active", SubState: "running", UnitFileState: "enabled"}

func TestDetector(t *testing.T) {
	t.Run("a_clean_host_has_no_conflicts", func(t *testing.T) {
		r := newHost(t).check(t, updaters.Policy{})
		if len(r.Conflicts)+len(r.Allowed)+len(r.Ignored)+len(r.Unchecked) != 0 || r.Message() != "" {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("layerd_as_the_registered_driver_is_no_conflict", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "layerd", "")
		if r := h.check(t, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("conflicts = %v", r.Conflicts)
		}
	})

	t.Run("another_driver_with_a_running_unit_conflicts", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "Zincati", "zincati.service")
		h.units.States["zincati.service"] = running
		r := h.check(t, updaters.Policy{})
		want := []updaters.Updater{
			{Name: "Zincati", Evidence: "registered as rpm-ostree's update driver by zincati.service, which is active (running) and enabled"},
			{Name: "zincati", Evidence: "zincati.service is active (running) and enabled"},
		}
		if !slices.Equal(r.Conflicts, want) {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
		msg := r.Message()
		for _, s := range []string{"another updater owns the host", "Zincati (registered", "zincati (zincati.service is active", "allowedUpdaters"} {
			if !strings.Contains(msg, s) {
				t.Errorf("message %q lacks %q", msg, s)
			}
		}
	})

	t.Run("a_driver_whose_unit_stopped_is_ignored", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "Zincati", "zincati.service") // the fake reports it not-found, inactive
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 0 || len(r.Ignored) != 1 || r.Ignored[0].Name != "Zincati" {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_driver_whose_unit_failed_still_conflicts", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "other", "other.service")
		h.units.States["other.service"] = systemd.UnitState{ActiveState: "failed", SubState: "failed", UnitFileState: "static"}
		if r := h.check(t, updaters.Policy{}); len(r.Conflicts) != 1 || r.Conflicts[0].Name != "other" {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_driver_without_a_unit_conflicts", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "zincati", "")
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].Evidence != "registered as rpm-ostree's update driver (no systemd unit recorded)" {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_malformed_driver_file_is_an_unknown_driver", func(t *testing.T) {
		h := newHost(t)
		writeFile(t, h.driverFile, []byte("garbage"))
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].Name != updaters.UnknownUpdateDriver || !strings.Contains(r.Conflicts[0].Evidence, h.driverFile) {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("an_enabled_zincati_conflicts_even_when_stopped", func(t *testing.T) {
		h := newHost(t)
		h.units.States["zincati.service"] = systemd.UnitState{LoadState: "loaded", ActiveState: "inactive", SubState: "dead", UnitFileState: "enabled"}
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].Evidence != "zincati.service is inactive (dead) and enabled" {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_disabled_stopped_zincati_is_no_conflict", func(t *testing.T) {
		h := newHost(t)
		h.units.States["zincati.service"] = systemd.UnitState{LoadState: "loaded", ActiveState: "inactive", SubState: "dead", UnitFileState: "disabled"}
		if r := h.check(t, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
	})

	t.Run("the_bootc_timer_and_a_running_bootc_update_are_one_updater", func(t *testing.T) {
		h := newHost(t)
		h.units.States["bootc-fetch-apply-updates.timer"] = systemd.UnitState{ActiveState: "active", SubState: "waiting", UnitFileState: "enabled"}
		h.units.States["bootc-fetch-apply-updates.service"] = systemd.UnitState{ActiveState: "activating", SubState: "start", UnitFileState: "static"}
		r := h.check(t, updaters.Policy{})
		want := []updaters.Updater{{Name: "bootc", Evidence: "bootc-fetch-apply-updates.timer is active (waiting) and enabled; " +
			"bootc-fetch-apply-updates.service is activating (start) and static"}}
		if !slices.Equal(r.Conflicts, want) {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
	})

	t.Run("without_systemd_units_are_unchecked_not_conflicts", func(t *testing.T) {
		h := newHost(t)
		h.units.Err = systemd.ErrNoSystemd
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 0 || len(r.Unchecked) != 1 || r.Unchecked[0].Source != "systemd units" || !errors.Is(r.Unchecked[0].Err, systemd.ErrNoSystemd) {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("without_systemd_another_driver_still_conflicts", func(t *testing.T) {
		h := newHost(t)
		h.units.Err = systemd.ErrNoSystemd
		h.register(t, "Zincati", "zincati.service")
		r := h.check(t, updaters.Policy{})
		if len(r.Conflicts) != 1 || r.Conflicts[0].Evidence != "registered as rpm-ostree's update driver by zincati.service (its state unknown)" || len(r.Unchecked) != 2 {
			t.Fatalf("report = %+v", r)
		}
	})

	t.Run("a_failing_systemd_is_an_error", func(t *testing.T) {
		h := newHost(t)
		h.units.Err = errors.New("boom")
		d, err := updaters.New(updaters.Options{DriverFile: h.driverFile, HostRoot: h.root, Units: h.units})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := d.Check(context.Background(), updaters.Policy{}); err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("err = %v", err)
		}
	})

	for _, file := range []string{"currentconfig", "node-annotations.json", "node-annotation.json.bak"} {
		t.Run("the_machine_config_daemon's_"+file+"_conflicts", func(t *testing.T) {
			h := newHost(t)
			writeFile(t, filepath.Join(h.root, "etc", "machine-config-daemon", file), []byte("{}"))
			r := h.check(t, updaters.Policy{})
			want := []updaters.Updater{{Name: "machine-config-daemon", Evidence: "/etc/machine-config-daemon/" + file + " exists"}}
			if !slices.Equal(r.Conflicts, want) {
				t.Fatalf("conflicts = %+v", r.Conflicts)
			}
		})
	}

	t.Run("an_empty_machine_config_daemon_directory_is_no_conflict", func(t *testing.T) {
		h := newHost(t)
		if err := os.MkdirAll(filepath.Join(h.root, "etc", "machine-config-daemon"), 0o755); err != nil {
			t.Fatal(err)
		}
		if r := h.check(t, updaters.Policy{}); len(r.Conflicts) != 0 {
			t.Fatalf("conflicts = %+v", r.Conflicts)
		}
	})

	t.Run("the_policy_allows_by_name_case_insensitively", func(t *testing.T) {
		h := newHost(t)
		h.register(t, "Zincati", "zincati.service")
		h.units.States["zincati.service"] = running
		writeFile(t, filepath.Join(h.root, "etc", "machine-config-daemon", "currentconfig"), []byte("{}"))
		r := h.check(t, updaters.Policy{Allowed: []string{"zincati"}})
		if len(r.Allowed) != 2 || len(r.Conflicts) != 1 || r.Conflicts[0].Name != "machine-config-daemon" {
			t.Fatalf("report = %+v", r)
		}
		if r := h.check(t, updaters.Policy{Allowed: []string{updaters.AllowAll}}); len(r.Conflicts) != 0 || len(r.Allowed) != 3 {
			t.Fatalf("with * : %+v", r)
		}
	})

	t.Run("new_rejects_missing_dependencies", func(t *testing.T) {
		if _, err := updaters.New(updaters.Options{HostRoot: "/host"}); err == nil {
			t.Error("nil Units accepted")
		}
		if _, err := updaters.New(updaters.Options{Units: &systemd.FakeUnits{}}); err == nil {
			t.Error("empty HostRoot accepted")
		}
	})
}

func TestParsePolicy(t *testing.T) {
	for _, tc := range []struct {
		name, raw string
		want      []string
		wantErr   bool
	}{
		{"no_key_allows_nothing", `{"maxUnavailable": 1}`, nil, false},
		{"null_allows_nothing", `{"allowedUpdaters": null}`, nil, false},
		{"a_list_of_names", `{"allowedUpdaters": ["zincati", "bootc"]}`, []string{"zincati", "bootc"}, false},
		{"a_boolean_is_an_error", `{"allowedUpdaters": true}`, nil, true},
		{"a_string_is_an_error", `{"allowedUpdaters": "zincati"}`, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var raw map[string]json.RawMessage
			if err := json.Unmarshal([]byte(tc.raw), &raw); err != nil {
				t.Fatal(err)
			}
			p, err := updaters.ParsePolicy(raw)
			if (err != nil) != tc.wantErr || !slices.Equal(p.Allowed, tc.want) {
				t.Fatalf("policy %+v, err %v", p, err)
			}
			if err != nil && !strings.Contains(err.Error(), updaters.PolicyKey) {
				t.Errorf("err %q does not name the key", err)
			}
		})
	}
}

func TestFake(t *testing.T) {
	f := &updaters.Fake{Found: []updaters.Updater{{Name: "zincati", Evidence: "x"}, {Name: "bootc", Evidence: "y"}}}
	r, err := f.Check(context.Background(), updaters.Policy{Allowed: []string{"bootc"}})
	if err != nil || len(r.Conflicts) != 1 || r.Conflicts[0].Name != "zincati" || len(r.Allowed) != 1 {
		t.Fatalf("report %+v, %v", r, err)
	}
	f.Err = errors.New("boom")
	if _, err := f.Check(context.Background(), updaters.Policy{}); err == nil {
		t.Fatal("Err not returned")
	}
}
