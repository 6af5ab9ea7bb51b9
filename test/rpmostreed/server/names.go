package server

import (
	"fmt"
	"strings"

	"github.com/godbus/dbus/v5"
)

// Names on the bus (reference §1–§5).
const (
	BusName              = "org.projectatomic.rpmostree1"
	BasePath             = dbus.ObjectPath("/org/projectatomic/rpmostree1")
	SysrootPath          = dbus.ObjectPath("/org/projectatomic/rpmostree1/Sysroot")
	SysrootIface         = "org.projectatomic.rpmostree1.Sysroot"
	OSIface              = "org.projectatomic.rpmostree1.OS"
	OSExperimentalIface  = "org.projectatomic.rpmostree1.OSExperimental"
	TxnIface             = "org.projectatomic.rpmostree1.Transaction"
	ObjectManagerIface   = "org.freedesktop.DBus.ObjectManager"
	propertiesIface      = "org.freedesktop.DBus.Properties"
	introspectableIface  = "org.freedesktop.DBus.Introspectable"
	DefaultTxnSocketPath = "/run/rpm-ostree-transaction.sock"
)

// Error names (reference §7.1).
const (
	ErrNameBusy           = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code26"
	ErrNameFailed         = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code0"
	ErrNameNotFound       = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code1"
	errNameNotSupported   = "org.freedesktop.DBus.Error.NotSupported"
	msgRebootInitiated    = "Reboot initiated, cannot start new transaction"
	msgOperationCancelled = "Operation was cancelled"
)

// OSPath is the object path of a stateroot: bytes in A-Z a-z 0-9 _ are kept, '-' and '/'
// become '_', any other byte becomes '_' and two upper-case hex digits (reference §1).
func OSPath(stateroot string) dbus.ObjectPath {
	var b strings.Builder
	for i := 0; i < len(stateroot); i++ {
		c := stateroot[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '_':
			b.WriteByte(c)
		case c == '-', c == '/':
			b.WriteByte('_')
		default:
			fmt.Fprintf(&b, "_%02X", c)
		}
	}
	return BasePath + "/" + dbus.ObjectPath(b.String())
}

func busyError(title string) *dbus.Error {
	return dbus.NewError(ErrNameBusy, []any{
		"Transaction in progress: " + title + "\n You can cancel the current transaction with `rpm-ostree cancel`",
	})
}

func failedError(msg string) *dbus.Error { return dbus.NewError(ErrNameFailed, []any{msg}) }

func notImplemented(iface, member string) *dbus.Error {
	return dbus.NewError(errNameNotSupported, []any{
		fmt.Sprintf("rpm-ostreed stand-in: %s.%s is not implemented", iface, member),
	})
}
