package rpmostree

import "github.com/godbus/dbus/v5"

// Names on the bus (reference §1, §2, §3, §5).
const (
	BusName        = "org.projectatomic.rpmostree1"
	BasePath       = dbus.ObjectPath("/org/projectatomic/rpmostree1")
	SysrootPath    = dbus.ObjectPath("/org/projectatomic/rpmostree1/Sysroot")
	SysrootIface   = "org.projectatomic.rpmostree1.Sysroot"
	OSIface        = "org.projectatomic.rpmostree1.OS"
	TxnIface       = "org.projectatomic.rpmostree1.Transaction"
	TxnPath        = dbus.ObjectPath("/")
	propertiesFace = "org.freedesktop.DBus.Properties"
)

// D-Bus error names the client tells apart (reference §7.1).
const (
	ErrNameBusy     = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code26"
	ErrNameFailed   = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code0"
	ErrNameNotFound = "org.gtk.GDBus.UnmappedGError.Quark._g_2dio_2derror_2dquark.Code1"
	ErrNameNoReply  = "org.freedesktop.DBus.Error.NoReply"
)

// Cleanup elements (reference §4.3).
const (
	CleanupPendingDeploy  = "pending-deploy"
	CleanupRollbackDeploy = "rollback-deploy"
	CleanupBase           = "base"
	CleanupRepomd         = "repomd"
)
