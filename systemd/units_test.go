package systemd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/systemd"
	"layerd.dev/layerd/test/dbusd"
)

const systemd1Name = "org.freedesktop.systemd1"

// systemd1Policy lets anyone own and call org.freedesktop.systemd1 on the test bus.
const systemd1Policy = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow own="org.freedesktop.systemd1"/>
    <allow send_destination="org.freedesktop.systemd1"/>
  </policy>
</busconfig>
`

// fakeManager answers Manager.LoadUnit with a path per unit; fakeUnit answers GetAll there.
type fakeManager struct {
	conn  *dbus.Conn
	units map[string]map[string]dbus.Variant
	mu    sync.Mutex
	err   *dbus.Error
}

func (m *fakeManager) fail(err *dbus.Error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *fakeManager) LoadUnit(name string) (dbus.ObjectPath, *dbus.Error) {
	m.mu.Lock()
	err := m.err
	m.mu.Unlock()
	if err != nil {
		return "", err
	}
	path := dbus.ObjectPath("/org/freedesktop/systemd1/unit/" + strings.NewReplacer(".", "_2e", "-", "_2d").Replace(name))
	props, ok := m.units[name]
	if !ok {
		props = map[string]dbus.Variant{
			"LoadState": dbus.MakeVariant("not-found"), "ActiveState": dbus.MakeVariant("inactive"),
			"SubState": dbus.MakeVariant("dead"), "UnitFileState": dbus.MakeVariant(""),
		}
	}
	if err := m.conn.Export(fakeUnit(props), path, "org.freedesktop.DBus.Properties"); err != nil {
		return "", dbus.MakeFailedError(err)
	}
	return path, nil
}

type fakeUnit map[string]dbus.Variant

func (u fakeUnit) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	if iface != "org.freedesktop.systemd1.Unit" {
		return nil, dbus.MakeFailedError(errors.New("unknown interface " + iface))
	}
	return u, nil
}

func startUnitsBus(t *testing.T) *dbusd.Bus {
	t.Helper()
	dir, err := os.MkdirTemp("", "units-") // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := dbusd.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if err := os.WriteFile(filepath.Join(b.PolicyDir(), systemd1Name+".conf"), []byte(systemd1Policy), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := connect(t, b.Address()).BusObject().Call("org.freedesktop.DBus.ReloadConfig", 0).Err; err != nil {
		t.Fatalf("reloading the bus policy: %v\n%s", err, b.Log())
	}
	return b
}

func TestSystemdUnits(t *testing.T) {
	b := startUnitsBus(t)
	ctx := context.Background()
	units, err := systemd.NewSystemdUnits(connect(t, b.Address()))
	if err != nil {
		t.Fatal(err)
	}

	t.Run("without_systemd_on_the_bus_it_is_ErrNoSystemd", func(t *testing.T) {
		_, err := units.Unit(ctx, "zincati.service")
		if !errors.Is(err, systemd.ErrNoSystemd) || !strings.Contains(err.Error(), "zincati.service") {
			t.Fatalf("err %v, want ErrNoSystemd naming the unit", err)
		}
	})

	conn := connect(t, b.Address())
	m := &fakeManager{conn: conn, units: map[string]map[string]dbus.Variant{
		"bootc-fetch-apply-updates.timer": {
			"LoadState": dbus.MakeVariant("loaded"), "ActiveState": dbus.MakeVariant("active"),
			"SubState": dbus.MakeVariant("waiting"), "UnitFileState": dbus.MakeVariant("enabled"),
			"Id": dbus.MakeVariant("bootc-fetch-apply-updates.timer"),
		},
	}}
	if err := conn.Export(m, "/org/freedesktop/systemd1", "org.freedesktop.systemd1.Manager"); err != nil {
		t.Fatal(err)
	}
	if reply, err := conn.RequestName(systemd1Name, dbus.NameFlagDoNotQueue); err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName = %v, %v\n%s", reply, err, b.Log())
	}

	t.Run("reads_a_units_states", func(t *testing.T) {
		u, err := units.Unit(ctx, "bootc-fetch-apply-updates.timer")
		if err != nil {
			t.Fatal(err)
		}
		want := systemd.UnitState{Name: "bootc-fetch-apply-updates.timer", LoadState: "loaded", ActiveState: "active", SubState: "waiting", UnitFileState: "enabled"}
		if u != want || !u.Active() || !u.Enabled() {
			t.Fatalf("unit = %+v (active %v, enabled %v)", u, u.Active(), u.Enabled())
		}
	})

	t.Run("an_unknown_unit_is_not_found_not_an_error", func(t *testing.T) {
		u, err := units.Unit(ctx, "zincati.service")
		if err != nil || u.LoadState != "not-found" || u.Active() || u.Enabled() {
			t.Fatalf("unit = %+v, %v", u, err)
		}
	})

	t.Run("a_failing_manager_is_an_error_but_not_ErrNoSystemd", func(t *testing.T) {
		m.fail(dbus.MakeFailedError(errors.New("boom")))
		defer m.fail(nil)
		_, err := units.Unit(ctx, "zincati.service")
		if err == nil || errors.Is(err, systemd.ErrNoSystemd) || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("err %v", err)
		}
	})
}

func TestUnitState(t *testing.T) {
	for _, tc := range []struct {
		active, file            string
		wantActive, wantEnabled bool
	}{
		{"active", "enabled", true, true},
		{"activating", "enabled-runtime", true, true},
		{"reloading", "static", true, false},
		{"failed", "disabled", false, false},
		{"inactive", "masked", false, false},
		{"deactivating", "linked", false, false},
	} {
		u := systemd.UnitState{ActiveState: tc.active, UnitFileState: tc.file}
		if u.Active() != tc.wantActive || u.Enabled() != tc.wantEnabled {
			t.Errorf("%s/%s: active %v enabled %v", tc.active, tc.file, u.Active(), u.Enabled())
		}
	}
	if _, err := systemd.NewSystemdUnits(nil); err == nil {
		t.Error("nil connection accepted")
	}
}
