package server

import (
	"testing"

	"github.com/godbus/dbus/v5"
)

func dep(os string, serial int32, staged bool) dict {
	return dict{"osname": dbus.MakeVariant(os), "serial": dbus.MakeVariant(serial), "staged": dbus.MakeVariant(staged)}
}

func serialOf(d dict) int32 {
	if len(d) == 0 {
		return -1
	}
	return d["serial"].Value().(int32)
}

func TestComputeView(t *testing.T) {
	for _, tc := range []struct {
		name                     string
		deps                     []dict
		booted                   int
		os                       string
		wantBooted, wantDef, wRb int32 // -1: empty dict
		wantBootedPath           dbus.ObjectPath
	}{
		{"booted_only_defaults_to_booted", []dict{dep("fcos", 0, false)}, 0, "fcos", 0, 0, -1, "/org/projectatomic/rpmostree1/fcos"},
		{"staged_is_default_and_booted_has_rollback",
			[]dict{dep("fcos", 2, true), dep("fcos", 1, false), dep("fcos", 0, false)}, 1, "fcos", 1, 2, 0, "/org/projectatomic/rpmostree1/fcos"},
		{"other_stateroot_has_empty_booted_and_its_first_as_default",
			[]dict{dep("fcos", 1, false), dep("rhcos", 5, false), dep("rhcos", 4, false)}, 0, "rhcos", -1, 5, -1, "/org/projectatomic/rpmostree1/fcos"},
		{"not_booted_reports_slash",
			[]dict{dep("default", 3, false), dep("default", 2, false)}, -1, "default", -1, 3, -1, "/"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := computeView(tc.deps, tc.booted)
			ov, ok := v.oses[tc.os]
			if !ok {
				t.Fatalf("no OS %s in %v", tc.os, v.oses)
			}
			if serialOf(ov.booted) != tc.wantBooted || serialOf(ov.def) != tc.wantDef || serialOf(ov.rollback) != tc.wRb {
				t.Fatalf("booted %d default %d rollback %d", serialOf(ov.booted), serialOf(ov.def), serialOf(ov.rollback))
			}
			if v.booted != tc.wantBootedPath {
				t.Fatalf("Booted = %s", v.booted)
			}
		})
	}
}

func TestOSPath(t *testing.T) {
	for in, want := range map[string]dbus.ObjectPath{
		"fedora-coreos": "/org/projectatomic/rpmostree1/fedora_coreos",
		"rhcos":         "/org/projectatomic/rpmostree1/rhcos",
		"default":       "/org/projectatomic/rpmostree1/default",
		"a/b.c":         "/org/projectatomic/rpmostree1/a_b_2Ec",
		"x y":           "/org/projectatomic/rpmostree1/x_20y",
	} {
		if got := OSPath(in); got != want || !got.IsValid() {
			t.Errorf("OSPath(%q) = %s, want %s", in, got, want)
		}
	}
}
