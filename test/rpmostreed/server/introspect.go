package server

import (
	"encoding/xml"
	"sort"
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"github.com/godbus/dbus/v5/prop"
)

// The interfaces as rpm-ostree's org.projectatomic.rpmostree1.xml declares them: every member of
// the reference tables §2, §3.1, §3.2 and §5 with its signature and argument directions.

func in(name, sig string) introspect.Arg {
	return introspect.Arg{Name: name, Type: sig, Direction: "in"}
}
func out(name, sig string) introspect.Arg {
	return introspect.Arg{Name: name, Type: sig, Direction: "out"}
}
func ro(name, sig string) introspect.Property {
	return introspect.Property{Name: name, Type: sig, Access: "read"}
}
func method(name string, args ...introspect.Arg) introspect.Method {
	return introspect.Method{Name: name, Args: args}
}
func signal(name string, args ...introspect.Arg) introspect.Signal {
	return introspect.Signal{Name: name, Args: args}
}

const txnAddress = "transaction_address"

var sysrootInterface = introspect.Interface{
	Name: SysrootIface,
	Methods: []introspect.Method{
		method("RegisterClient", in("options", "a{sv}")),
		method("UnregisterClient", in("options", "a{sv}")),
		method("Reload"),
		method("ReloadConfig"),
		method("GetOS", in("name", "s"), out("object_path", "o")),
	},
	Properties: []introspect.Property{
		ro("Booted", "o"), ro("Path", "s"), ro("ActiveTransaction", "(sss)"),
		ro("ActiveTransactionPath", "s"), ro("Deployments", "aa{sv}"), ro("AutomaticUpdatePolicy", "s"),
	},
}

var osInterface = introspect.Interface{
	Name: OSIface,
	Methods: []introspect.Method{
		method("AutomaticUpdateTrigger", in("options", "a{sv}"), out("enabled", "b"), out(txnAddress, "s")),
		method("GetDeploymentsRpmDiff", in("deployid0", "s"), in("deployid1", "s"), out("result", "a(sua{sv})")),
		method("Deploy", in("revision", "s"), in("options", "a{sv}"), out(txnAddress, "s")),
		method("GetCachedDeployRpmDiff", in("revision", "s"), in("packages", "as"), out("result", "a(sua{sv})"), out("details", "a{sv}")),
		method("DownloadDeployRpmDiff", in("revision", "s"), in("packages", "as"), out(txnAddress, "s")),
		method("Upgrade", in("options", "a{sv}"), out(txnAddress, "s")),
		method("GetCachedUpdateRpmDiff", in("deployid", "s"), out("result", "a(sua{sv})"), out("details", "a{sv}")),
		method("DownloadUpdateRpmDiff", out(txnAddress, "s")),
		method("Rollback", in("options", "a{sv}"), out(txnAddress, "s")),
		method("ClearRollbackTarget", in("options", "a{sv}"), out(txnAddress, "s")),
		method("Rebase", in("options", "a{sv}"), in("refspec", "s"), in("packages", "as"), out(txnAddress, "s")),
		method("GetCachedRebaseRpmDiff", in("refspec", "s"), in("packages", "as"), out("result", "a(sua{sv})"), out("details", "a{sv}")),
		method("DownloadRebaseRpmDiff", in("refspec", "s"), in("packages", "as"), out(txnAddress, "s")),
		method("PkgChange", in("options", "a{sv}"), in("packages_added", "as"), in("packages_removed", "as"), out(txnAddress, "s")),
		method("SetInitramfsState", in("regenerate", "b"), in("args", "as"), in("options", "a{sv}"), out(txnAddress, "s")),
		method("InitramfsEtc", in("track", "as"), in("untrack", "as"), in("untrack_all", "b"), in("force_sync", "b"), in("options", "a{sv}"), out(txnAddress, "s")),
		method("KernelArgs", in("existing_kernel_arg_string", "s"), in("kernel_args_added", "as"), in("kernel_args_replaced", "as"), in("kernel_args_removed", "as"), in("options", "a{sv}"), out(txnAddress, "s")),
		method("GetDeploymentBootConfig", in("deployid", "s"), in("is_pending", "b"), out("bootconfig", "a{sv}")),
		method("Cleanup", in("elements", "as"), out(txnAddress, "s")),
		method("RefreshMd", in("options", "a{sv}"), out(txnAddress, "s")),
		method("ModifyYumRepo", in("repo_id", "s"), in("settings", "a{ss}"), out(txnAddress, "s")),
		method("ListRepos", out("repos", "aa{sv}")),
		method("UpdateDeployment", in("modifiers", "a{sv}"), in("options", "a{sv}"), out(txnAddress, "s")),
		method("FinalizeDeployment", in("options", "a{sv}"), out(txnAddress, "s")),
		method("WhatProvides", in("provides", "as"), out("packages", "aa{sv}")),
		method("GetPackages", in("names", "as"), out("packages", "aa{sv}")),
		method("Search", in("names", "as"), out("packages", "aa{sv}")),
	},
	Properties: []introspect.Property{
		ro("BootedDeployment", "a{sv}"), ro("DefaultDeployment", "a{sv}"), ro("RollbackDeployment", "a{sv}"),
		ro("CachedUpdate", "a{sv}"), ro("HasCachedUpdateRpmDiff", "b"), ro("Name", "s"),
	},
}

var osExperimentalInterface = introspect.Interface{
	Name: OSExperimentalIface,
	Methods: []introspect.Method{
		method("Moo", in("utf8", "b"), out("result", "s")),
		method("LiveFs", in("options", "a{sv}"), out(txnAddress, "s")),
		method("DownloadPackages", in("queries", "as"), in("source", "s")),
	},
}

var txnInterface = introspect.Interface{
	Name: TxnIface,
	Methods: []introspect.Method{
		method("Cancel"),
		method("Start", out("started", "b")),
	},
	Signals: []introspect.Signal{
		signal("Finished", out("success", "b"), out("error_message", "s")),
		signal("Message", out("text", "s")),
		signal("TaskBegin", out("text", "s")),
		signal("TaskEnd", out("text", "s")),
		signal("PercentProgress", out("text", "s"), out("percentage", "u")),
		signal("DownloadProgress", out("time", "(tt)"), out("outstanding", "(uu)"), out("metadata", "(uuu)"),
			out("delta", "(uuut)"), out("content", "(uu)"), out("transfer", "(tt)")),
		signal("SignatureProgress", out("signature", "av"), out("commit", "s")),
		signal("ProgressEnd"),
	},
	Properties: []introspect.Property{ro("Title", "s"), ro("InitiatingClientDescription", "s")},
}

var objectManagerInterface = introspect.Interface{
	Name:    ObjectManagerIface,
	Methods: []introspect.Method{method("GetManagedObjects", out("object_paths_interfaces_and_properties", "a{oa{sa{sv}}}"))},
	Signals: []introspect.Signal{
		signal("InterfacesAdded", out("object_path", "o"), out("interfaces_and_properties", "a{sa{sv}}")),
		signal("InterfacesRemoved", out("object_path", "o"), out("interfaces", "as")),
	},
}

// standardInterfaces are served on every object, as GDBus does.
var standardInterfaces = []introspect.Interface{prop.IntrospectData, introspect.IntrospectData, introspect.PeerData}

// introspector serves Introspect with XML built at call time (children change).
type introspector func() string

func (f introspector) Introspect() (string, *dbus.Error) { return f(), nil }

func nodeXML(ifaces []introspect.Interface, children []string) string {
	n := introspect.Node{Interfaces: append(append([]introspect.Interface{}, standardInterfaces...), ifaces...)}
	sort.Strings(children)
	for _, c := range children {
		n.Children = append(n.Children, introspect.Node{Name: c})
	}
	b, err := xml.MarshalIndent(n, "", "  ")
	if err != nil {
		// Only static, valid data is marshalled here.
		panic(err)
	}
	return strings.TrimSpace(introspect.IntrospectDeclarationString) + "\n" + string(b) + "\n"
}
