package server_test

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"

	"layerd.dev/layerd/test/rpmostreed/server"
)

// member is one row of the reference tables (§2, §3.1, §3.2, §5): in and out signatures are
// the argument types in order.
type member struct {
	iface, name, kind string // kind: method, property, signal
	in, out           []string
}

func m(iface, name string, in, out []string) member { return member{iface, name, "method", in, out} }
func p(iface, name, typ string) member              { return member{iface, name, "property", nil, []string{typ}} }
func sg(iface, name string, args ...string) member  { return member{iface, name, "signal", nil, args} }

func ss(s ...string) []string { return s }

const (
	sysI = "org.projectatomic.rpmostree1.Sysroot"
	osI  = "org.projectatomic.rpmostree1.OS"
	expI = "org.projectatomic.rpmostree1.OSExperimental"
	txI  = "org.projectatomic.rpmostree1.Transaction"
)

// referenceMembers transcribes the reference tables.
var referenceMembers = []member{
	// §2 Sysroot
	p(sysI, "Booted", "o"), p(sysI, "Path", "s"), p(sysI, "ActiveTransaction", "(sss)"),
	p(sysI, "ActiveTransactionPath", "s"), p(sysI, "Deployments", "aa{sv}"), p(sysI, "AutomaticUpdatePolicy", "s"),
	m(sysI, "RegisterClient", ss("a{sv}"), nil), m(sysI, "UnregisterClient", ss("a{sv}"), nil),
	m(sysI, "Reload", nil, nil), m(sysI, "ReloadConfig", nil, nil), m(sysI, "GetOS", ss("s"), ss("o")),
	// §3.1 OS, used by layerd
	p(osI, "Name", "s"), p(osI, "BootedDeployment", "a{sv}"), p(osI, "DefaultDeployment", "a{sv}"),
	p(osI, "RollbackDeployment", "a{sv}"), p(osI, "CachedUpdate", "a{sv}"), p(osI, "HasCachedUpdateRpmDiff", "b"),
	m(osI, "Rebase", ss("a{sv}", "s", "as"), ss("s")), m(osI, "Deploy", ss("s", "a{sv}"), ss("s")),
	m(osI, "Upgrade", ss("a{sv}"), ss("s")), m(osI, "UpdateDeployment", ss("a{sv}", "a{sv}"), ss("s")),
	m(osI, "Rollback", ss("a{sv}"), ss("s")), m(osI, "Cleanup", ss("as"), ss("s")),
	m(osI, "FinalizeDeployment", ss("a{sv}"), ss("s")),
	m(osI, "KernelArgs", ss("s", "as", "as", "as", "a{sv}"), ss("s")),
	m(osI, "GetDeploymentBootConfig", ss("s", "b"), ss("a{sv}")),
	// §3.2 OS, other members
	m(osI, "AutomaticUpdateTrigger", ss("a{sv}"), ss("b", "s")),
	m(osI, "GetDeploymentsRpmDiff", ss("s", "s"), ss("a(sua{sv})")),
	m(osI, "GetCachedUpdateRpmDiff", ss("s"), ss("a(sua{sv})", "a{sv}")),
	m(osI, "DownloadUpdateRpmDiff", nil, ss("s")),
	m(osI, "GetCachedRebaseRpmDiff", ss("s", "as"), ss("a(sua{sv})", "a{sv}")),
	m(osI, "GetCachedDeployRpmDiff", ss("s", "as"), ss("a(sua{sv})", "a{sv}")),
	m(osI, "DownloadRebaseRpmDiff", ss("s", "as"), ss("s")), m(osI, "DownloadDeployRpmDiff", ss("s", "as"), ss("s")),
	m(osI, "ClearRollbackTarget", ss("a{sv}"), ss("s")), m(osI, "RefreshMd", ss("a{sv}"), ss("s")),
	m(osI, "PkgChange", ss("a{sv}", "as", "as"), ss("s")),
	m(osI, "SetInitramfsState", ss("b", "as", "a{sv}"), ss("s")),
	m(osI, "InitramfsEtc", ss("as", "as", "b", "b", "a{sv}"), ss("s")),
	m(osI, "ModifyYumRepo", ss("s", "a{ss}"), ss("s")), m(osI, "ListRepos", nil, ss("aa{sv}")),
	m(osI, "WhatProvides", ss("as"), ss("aa{sv}")), m(osI, "GetPackages", ss("as"), ss("aa{sv}")),
	m(osI, "Search", ss("as"), ss("aa{sv}")),
	m(expI, "Moo", ss("b"), ss("s")), m(expI, "LiveFs", ss("a{sv}"), ss("s")),
	m(expI, "DownloadPackages", ss("as", "s"), nil),
}

// referenceTxnMembers transcribes §5 (served on the p2p connection at "/").
var referenceTxnMembers = []member{
	p(txI, "Title", "s"), p(txI, "InitiatingClientDescription", "s"),
	m(txI, "Start", nil, ss("b")), m(txI, "Cancel", nil, nil),
	sg(txI, "Finished", "b", "s"), sg(txI, "Message", "s"), sg(txI, "TaskBegin", "s"), sg(txI, "TaskEnd", "s"),
	sg(txI, "PercentProgress", "s", "u"),
	sg(txI, "DownloadProgress", "(tt)", "(uu)", "(uuu)", "(uuut)", "(uu)", "(tt)"),
	sg(txI, "SignatureProgress", "av", "s"), sg(txI, "ProgressEnd"),
}

func introspectNode(t *testing.T, obj dbus.BusObject) *introspect.Node {
	t.Helper()
	var data string
	if err := obj.Call("org.freedesktop.DBus.Introspectable.Introspect", 0).Store(&data); err != nil {
		t.Fatal(err)
	}
	var n introspect.Node
	if err := xml.Unmarshal([]byte(data), &n); err != nil {
		t.Fatalf("%v in %s", err, data)
	}
	return &n
}

func findMember(n *introspect.Node, want member) (in, out []string, found bool) {
	for _, i := range n.Interfaces {
		if i.Name != want.iface {
			continue
		}
		switch want.kind {
		case "method":
			for _, meth := range i.Methods {
				if meth.Name == want.name {
					for _, a := range meth.Args {
						if a.Direction == "in" {
							in = append(in, a.Type)
						} else {
							out = append(out, a.Type)
						}
					}
					return in, out, true
				}
			}
		case "property":
			for _, pr := range i.Properties {
				if pr.Name == want.name && pr.Access == "read" {
					return nil, []string{pr.Type}, true
				}
			}
		case "signal":
			for _, s := range i.Signals {
				if s.Name == want.name {
					for _, a := range s.Args {
						if a.Direction != "" && a.Direction != "out" {
							return nil, nil, false
						}
						out = append(out, a.Type)
					}
					return nil, out, true
				}
			}
		}
	}
	return nil, nil, false
}

func checkMembers(t *testing.T, n *introspect.Node, members []member) {
	for _, want := range members {
		t.Run(want.iface[strings.LastIndex(want.iface, ".")+1:]+"."+want.name, func(t *testing.T) {
			in, out, found := findMember(n, want)
			if !found {
				t.Fatalf("%s %s.%s missing from introspection", want.kind, want.iface, want.name)
			}
			if strings.Join(in, ",") != strings.Join(want.in, ",") || strings.Join(out, ",") != strings.Join(want.out, ",") {
				t.Fatalf("%s: in %v out %v, want in %v out %v", want.name, in, out, want.in, want.out)
			}
		})
	}
}

func TestIntrospection(t *testing.T) {
	w := startWorld(t)
	conn := w.raw(t)

	t.Run("sysroot_and_os_objects_declare_every_reference_member", func(t *testing.T) {
		sys := introspectNode(t, conn.Object(server.BusName, server.SysrootPath))
		osNode := introspectNode(t, conn.Object(server.BusName, osPath))
		merged := &introspect.Node{Interfaces: append(sys.Interfaces, osNode.Interfaces...)}
		checkMembers(t, merged, referenceMembers)
	})

	t.Run("transaction_object_declares_every_reference_member", func(t *testing.T) {
		w.srv.StallTransactions()
		defer w.srv.ReleaseTransactions()
		addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
		if err != nil {
			t.Fatal(err)
		}
		pr := dialPeer(t, addr)
		checkMembers(t, introspectNode(t, pr.conn.Object("", "/")), referenceTxnMembers)
		var title string
		if err := pr.conn.Object("", "/").Call("org.freedesktop.DBus.Properties.Get", 0, txI, "Title").Store(&title); err != nil || title != "new-deployment" {
			t.Fatalf("Title = %q, %v", title, err)
		}
		_ = pr.conn.Close()
	})

	t.Run("base_path_lists_children_and_the_object_manager", func(t *testing.T) {
		n := introspectNode(t, conn.Object(server.BusName, server.BasePath))
		var children []string
		for _, c := range n.Children {
			children = append(children, c.Name)
		}
		if strings.Join(children, ",") != "Sysroot,fedora_coreos" {
			t.Fatalf("children = %v", children)
		}
		var objs map[dbus.ObjectPath]map[string]map[string]dbus.Variant
		if err := conn.Object(server.BusName, server.BasePath).Call("org.freedesktop.DBus.ObjectManager.GetManagedObjects", 0).Store(&objs); err != nil {
			t.Fatal(err)
		}
		if _, ok := objs[osPath][expI]; !ok || objs[server.SysrootPath][sysI]["Booted"].Value() != osPath {
			t.Fatalf("managed objects = %v", objs)
		}
	})

	// Every declared method must accept its declared signature: call it with zero values and
	// expect anything but UnknownMethod/InvalidArgs.
	t.Run("exported_methods_accept_their_declared_signatures", func(t *testing.T) {
		for _, mem := range referenceMembers {
			if mem.kind != "method" || !isStub(mem.name) {
				continue
			}
			path := osPath
			if mem.iface == sysI {
				path = server.SysrootPath
			}
			args := make([]any, len(mem.in))
			for i, s := range mem.in {
				args[i] = zeroOf(t, s)
			}
			err := conn.Object(server.BusName, path).Call(mem.iface+"."+mem.name, 0, args...).Err
			if de, ok := err.(dbus.Error); ok && (strings.HasSuffix(de.Name, "UnknownMethod") || strings.HasSuffix(de.Name, "InvalidArgs")) {
				t.Errorf("%s.%s(%v): %v", mem.iface, mem.name, mem.in, err)
			}
		}
	})
}

// isStub reports members that can be called without side effects on the world.
func isStub(name string) bool {
	switch name {
	case "Rebase", "Deploy", "Upgrade", "UpdateDeployment", "Rollback", "Cleanup", "FinalizeDeployment",
		"RegisterClient", "UnregisterClient":
		return false
	}
	return true
}

func zeroOf(t *testing.T, sig string) any {
	switch sig {
	case "s":
		return ""
	case "b":
		return false
	case "as":
		return []string{}
	case "a{sv}":
		return map[string]dbus.Variant{}
	case "a{ss}":
		return map[string]string{}
	}
	t.Fatalf("no zero value for %s", sig)
	return nil
}
