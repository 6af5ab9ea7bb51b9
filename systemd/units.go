package systemd

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/godbus/dbus/v5"
)

// systemd's names on the system bus.
const (
	systemd1Name    = "org.freedesktop.systemd1"
	systemd1Path    = dbus.ObjectPath("/org/freedesktop/systemd1")
	systemd1Manager = "org.freedesktop.systemd1.Manager"
	systemd1Unit    = "org.freedesktop.systemd1.Unit"
)

// ErrNoSystemd means nothing answers org.freedesktop.systemd1 on the bus: the bus is not a
// systemd host's system bus (a private dbus-daemon, a container without systemd). Unit states
// cannot be known there; a caller reports that instead of guessing.
var ErrNoSystemd = errors.New("systemd (org.freedesktop.systemd1) is not on the system bus")

// noSystemdErrors are the D-Bus errors of a bus without systemd's manager.
var noSystemdErrors = []string{
	"org.freedesktop.DBus.Error.ServiceUnknown",
	"org.freedesktop.DBus.Error.NameHasNoOwner",
	"org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
}

// UnitState is what systemd reports about one unit.
type UnitState struct {
	// Name is the unit's name, e.g. "zincati.service".
	Name string
	// LoadState is "loaded", "not-found", "masked", "error", …
	LoadState string
	// ActiveState is "active", "activating", "reloading", "deactivating", "inactive" or
	// "failed".
	ActiveState string
	// SubState is the type-specific state, e.g. "running", "waiting", "dead".
	SubState string
	// UnitFileState is "enabled", "enabled-runtime", "disabled", "static", "masked", … ("" for
	// a unit without a unit file).
	UnitFileState string
}

// Active reports whether the unit runs or is about to: active, activating or reloading.
func (u UnitState) Active() bool {
	return slices.Contains([]string{"active", "activating", "reloading"}, u.ActiveState)
}

// Enabled reports whether the unit starts by itself at boot: enabled or enabled-runtime.
func (u UnitState) Enabled() bool {
	return u.UnitFileState == "enabled" || u.UnitFileState == "enabled-runtime"
}

// Units tells the state of systemd units.
type Units interface {
	// Unit returns the state of the unit called name. A unit systemd does not know is not an
	// error: its LoadState is "not-found". Without systemd on the bus the error wraps
	// ErrNoSystemd.
	Unit(ctx context.Context, name string) (UnitState, error)
}

var (
	_ Units = (*SystemdUnits)(nil)
	_ Units = (*FakeUnits)(nil)
)

// SystemdUnits asks systemd's manager over D-Bus (Manager.LoadUnit, then the unit's
// properties), as `rpm-ostree` does for its update driver's unit.
type SystemdUnits struct {
	bus BusConn
}

// NewSystemdUnits returns a Units asking systemd on bus (a system-bus connection, see
// ConnectSystemBus). The caller keeps owning bus and closes it.
func NewSystemdUnits(bus BusConn) (*SystemdUnits, error) {
	if bus == nil {
		return nil, errors.New("systemd.NewSystemdUnits: nil bus connection")
	}
	return &SystemdUnits{bus: bus}, nil
}

// Unit implements Units.
func (s *SystemdUnits) Unit(ctx context.Context, name string) (UnitState, error) {
	var path dbus.ObjectPath
	call := s.bus.Object(systemd1Name, systemd1Path).CallWithContext(ctx, systemd1Manager+".LoadUnit", 0, name)
	if call.Err != nil {
		if n, ok := dbusErrorName(call.Err); ok && slices.Contains(noSystemdErrors, n) {
			return UnitState{}, fmt.Errorf("loading unit %s: %w (%s: %w)", name, ErrNoSystemd, n, call.Err)
		}
		return UnitState{}, fmt.Errorf("loading unit %s: %w", name, call.Err)
	}
	if err := call.Store(&path); err != nil {
		return UnitState{}, fmt.Errorf("loading unit %s: %w", name, err)
	}
	var props map[string]dbus.Variant
	call = s.bus.Object(systemd1Name, path).CallWithContext(ctx, "org.freedesktop.DBus.Properties.GetAll", 0, systemd1Unit)
	if call.Err != nil {
		return UnitState{}, fmt.Errorf("reading unit %s: %w", name, call.Err)
	}
	if err := call.Store(&props); err != nil {
		return UnitState{}, fmt.Errorf("reading unit %s: %w", name, err)
	}
	str := func(key string) string {
		v, _ := props[key].Value().(string)
		return v
	}
	return UnitState{
		Name: name, LoadState: str("LoadState"), ActiveState: str("ActiveState"),
		SubState: str("SubState"), UnitFileState: str("UnitFileState"),
	}, nil
}

// FakeUnits is a Units for unit tests: States by name (missing: "not-found", "inactive"), or
// Err when set.
type FakeUnits struct {
	States map[string]UnitState
	Err    error
}

// Unit implements Units.
func (f *FakeUnits) Unit(_ context.Context, name string) (UnitState, error) {
	if f.Err != nil {
		return UnitState{}, f.Err
	}
	if u, ok := f.States[name]; ok {
		u.Name = name
		return u, nil
	}
	return UnitState{Name: name, LoadState: "not-found", ActiveState: "inactive", SubState: "dead"}, nil
}
