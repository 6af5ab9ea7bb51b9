package systemd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/godbus/dbus/v5"
)

// logind's names on the system bus.
const (
	login1Name    = "org.freedesktop.login1"
	login1Path    = dbus.ObjectPath("/org/freedesktop/login1")
	login1Manager = "org.freedesktop.login1.Manager"
)

// ErrNoLogind means nothing answers org.freedesktop.login1 on the system bus: the host runs
// no systemd-logind (a minimal or non-systemd host, a container without it). Nothing can hold an
// inhibitor lock there, so a caller about to reboot may treat it as "no inhibitors" — after
// logging it, since a logind that is merely down also looks like this.
var ErrNoLogind = errors.New("logind (org.freedesktop.login1) is not on the system bus")

// noLogindErrors are the D-Bus errors that mean the bus has no logind and cannot start one:
// the name has no owner and is not activatable, or its activation unit is missing or masked.
var noLogindErrors = []string{
	"org.freedesktop.DBus.Error.ServiceUnknown",
	"org.freedesktop.DBus.Error.NameHasNoOwner",
	"org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
	"org.freedesktop.systemd1.NoSuchUnit",
	"org.freedesktop.systemd1.UnitMasked",
}

// Inhibitor is one logind inhibitor lock, as ListInhibitors reports it.
type Inhibitor struct {
	// Who is the holder's human-readable name ("kubelet", "GNOME Shell").
	Who string
	// Why is the holder's reason.
	Why string
	// What is a colon-separated list of what is inhibited ("shutdown:sleep").
	What string
	// Mode is "block", "delay" or (systemd >= 257) "block-weak".
	Mode string
	UID  uint32
	PID  uint32
}

// String names the holder for RebootInhibited messages: `kubelet (uid 0, pid 812): Kubelet
// needs time to handle node shutdown`.
func (i Inhibitor) String() string {
	return fmt.Sprintf("%s (uid %d, pid %d): %s", i.Who, i.UID, i.PID, i.Why)
}

// blocksShutdown reports whether i is a block lock on shutdown (which covers reboot). Delay
// locks only postpone a reboot for logind's InhibitDelayMaxSec and are not returned; neither are
// block-weak locks, which a privileged caller such as layerd overrides.
func (i Inhibitor) blocksShutdown() bool {
	return i.Mode == "block" && slices.Contains(strings.Split(i.What, ":"), "shutdown")
}

// Inhibitors tells the agent who would block a reboot.
type Inhibitors interface {
	// BlockingShutdown returns the block-mode inhibitors of shutdown (none: an empty slice).
	BlockingShutdown(ctx context.Context) ([]Inhibitor, error)
}

// BusConn is the part of a godbus connection LogindInhibitors uses; *dbus.Conn implements it.
type BusConn interface {
	Object(dest string, path dbus.ObjectPath) dbus.BusObject
}

// LogindInhibitors asks systemd-logind over D-Bus (org.freedesktop.login1.Manager.ListInhibitors).
type LogindInhibitors struct {
	bus BusConn
}

var (
	_ Inhibitors = (*LogindInhibitors)(nil)
	_ Inhibitors = (*FakeInhibitors)(nil)
	_ BusConn    = (*dbus.Conn)(nil)
)

// NewLogindInhibitors returns an Inhibitors asking logind on bus (a system-bus connection, see
// ConnectSystemBus). The caller keeps owning bus and closes it.
func NewLogindInhibitors(bus BusConn) (*LogindInhibitors, error) {
	if bus == nil {
		return nil, errors.New("systemd.NewLogindInhibitors: nil bus connection")
	}
	return &LogindInhibitors{bus: bus}, nil
}

// ConnectSystemBus opens a private connection to the system bus at address, or, when address is
// empty, at $DBUS_SYSTEM_BUS_ADDRESS (default unix:path=/run/dbus/system_bus_socket).
func ConnectSystemBus(address string) (*dbus.Conn, error) {
	if address == "" {
		conn, err := dbus.ConnectSystemBus()
		if err != nil {
			return nil, fmt.Errorf("connecting to the system bus: %w", err)
		}
		return conn, nil
	}
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, fmt.Errorf("connecting to the system bus at %s: %w", address, err)
	}
	return conn, nil
}

// listed is one entry of ListInhibitors' a(ssssuu) reply, in wire order.
type listed struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}

// BlockingShutdown implements Inhibitors. It fails with an error wrapping ErrNoLogind when the
// bus has no logind.
func (l *LogindInhibitors) BlockingShutdown(ctx context.Context) ([]Inhibitor, error) {
	call := l.bus.Object(login1Name, login1Path).CallWithContext(ctx, login1Manager+".ListInhibitors", 0)
	if call.Err != nil {
		name, ok := dbusErrorName(call.Err)
		if ok && slices.Contains(noLogindErrors, name) {
			return nil, fmt.Errorf("listing logind inhibitors: %w (%s: %w)", ErrNoLogind, name, call.Err)
		}
		if ok {
			return nil, fmt.Errorf("listing logind inhibitors: %s: %w", name, call.Err)
		}
		return nil, fmt.Errorf("listing logind inhibitors: %w", call.Err)
	}
	var all []listed
	if err := call.Store(&all); err != nil {
		return nil, fmt.Errorf("decoding logind inhibitors: %w", err)
	}
	out := []Inhibitor{}
	for _, e := range all {
		i := Inhibitor{Who: e.Who, Why: e.Why, What: e.What, Mode: e.Mode, UID: e.UID, PID: e.PID}
		if i.blocksShutdown() {
			out = append(out, i)
		}
	}
	return out, nil
}

// dbusErrorName returns the D-Bus error name in err's chain; godbus returns replies both as
// dbus.Error and *dbus.Error.
func dbusErrorName(err error) (string, bool) {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name, true
	}
	var dep *dbus.Error
	if errors.As(err, &dep) && dep != nil {
		return dep.Name, true
	}
	return "", false
}

// FakeInhibitors is an Inhibitors for unit tests: it returns List, or Err when set.
type FakeInhibitors struct {
	List []Inhibitor
	Err  error
}

// BlockingShutdown implements Inhibitors.
func (f *FakeInhibitors) BlockingShutdown(context.Context) ([]Inhibitor, error) {
	if f.Err != nil {
		return nil, f.Err
	}
	return slices.Clone(f.List), nil
}
