package server

import "github.com/godbus/dbus/v5"

// Members rpm-ostree has and layerd does not use: they exist with their exact signatures (so
// introspection and calls match) and fail with org.freedesktop.DBus.Error.NotSupported.

type rpmDiff = []struct {
	Name    string
	Type    uint32
	Details map[string]dbus.Variant
}

func (m osMethods) GetDeploymentsRpmDiff(string, string) (rpmDiff, *dbus.Error) {
	return nil, notImplemented(OSIface, "GetDeploymentsRpmDiff")
}

func (m osMethods) GetCachedDeployRpmDiff(string, []string) (rpmDiff, map[string]dbus.Variant, *dbus.Error) {
	return nil, nil, notImplemented(OSIface, "GetCachedDeployRpmDiff")
}

func (m osMethods) DownloadDeployRpmDiff(string, []string) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "DownloadDeployRpmDiff")
}

func (m osMethods) GetCachedUpdateRpmDiff(string) (rpmDiff, map[string]dbus.Variant, *dbus.Error) {
	return nil, nil, notImplemented(OSIface, "GetCachedUpdateRpmDiff")
}

func (m osMethods) DownloadUpdateRpmDiff() (string, *dbus.Error) {
	return "", notImplemented(OSIface, "DownloadUpdateRpmDiff")
}

func (m osMethods) ClearRollbackTarget(map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "ClearRollbackTarget")
}

func (m osMethods) GetCachedRebaseRpmDiff(string, []string) (rpmDiff, map[string]dbus.Variant, *dbus.Error) {
	return nil, nil, notImplemented(OSIface, "GetCachedRebaseRpmDiff")
}

func (m osMethods) DownloadRebaseRpmDiff(string, []string) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "DownloadRebaseRpmDiff")
}

func (m osMethods) PkgChange(map[string]dbus.Variant, []string, []string) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "PkgChange")
}

func (m osMethods) SetInitramfsState(bool, []string, map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "SetInitramfsState")
}

func (m osMethods) InitramfsEtc([]string, []string, bool, bool, map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "InitramfsEtc")
}

func (m osMethods) KernelArgs(string, []string, []string, []string, map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "KernelArgs")
}

func (m osMethods) GetDeploymentBootConfig(string, bool) (map[string]dbus.Variant, *dbus.Error) {
	return nil, notImplemented(OSIface, "GetDeploymentBootConfig")
}

func (m osMethods) RefreshMd(map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "RefreshMd")
}

func (m osMethods) ModifyYumRepo(string, map[string]string) (string, *dbus.Error) {
	return "", notImplemented(OSIface, "ModifyYumRepo")
}

func (m osMethods) ListRepos() ([]map[string]dbus.Variant, *dbus.Error) {
	return nil, notImplemented(OSIface, "ListRepos")
}

func (m osMethods) WhatProvides([]string) ([]map[string]dbus.Variant, *dbus.Error) {
	return nil, notImplemented(OSIface, "WhatProvides")
}

func (m osMethods) GetPackages([]string) ([]map[string]dbus.Variant, *dbus.Error) {
	return nil, notImplemented(OSIface, "GetPackages")
}

func (m osMethods) Search([]string) ([]map[string]dbus.Variant, *dbus.Error) {
	return nil, notImplemented(OSIface, "Search")
}

// osExperimental is org.projectatomic.rpmostree1.OSExperimental.
type osExperimental struct{ o *osObject }

func (osExperimental) Moo(utf8 bool) (string, *dbus.Error) {
	if utf8 {
		return "🐄\n", nil
	}
	return "moo\n", nil
}

func (osExperimental) LiveFs(map[string]dbus.Variant) (string, *dbus.Error) {
	return "", notImplemented(OSExperimentalIface, "LiveFs")
}

func (osExperimental) DownloadPackages([]string, string) *dbus.Error {
	return notImplemented(OSExperimentalIface, "DownloadPackages")
}
