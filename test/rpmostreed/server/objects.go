package server

import (
	"strings"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
)

// exportStatic exports the Sysroot object, the ObjectManager at the base path and the
// introspection nodes leading to them.
func (s *Server) exportStatic() error {
	var err error
	s.sysrootProps, err = exportProps(s.conn, SysrootPath, map[string]map[string]any{SysrootIface: {
		"Booted":                dbus.ObjectPath("/"),
		"Path":                  s.opts.SysrootPath,
		"ActiveTransaction":     activeTxn{},
		"ActiveTransactionPath": "",
		"Deployments":           []dict{},
		"AutomaticUpdatePolicy": s.opts.AutomaticUpdatePolicy,
	}})
	if err != nil {
		return err
	}
	sysXML := nodeXML([]introspect.Interface{sysrootInterface}, nil)
	for _, e := range []struct {
		v     any
		path  dbus.ObjectPath
		iface string
	}{
		{sysrootObject{s}, SysrootPath, SysrootIface},
		{introspector(func() string { return sysXML }), SysrootPath, introspectableIface},
		{objectManager{s}, BasePath, ObjectManagerIface},
		{introspector(s.baseXML), BasePath, introspectableIface},
		{introspector(func() string { return nodeXML(nil, []string{"org"}) }), "/", introspectableIface},
		{introspector(func() string { return nodeXML(nil, []string{"projectatomic"}) }), "/org", introspectableIface},
		{introspector(func() string { return nodeXML(nil, []string{"rpmostree1"}) }), "/org/projectatomic", introspectableIface},
	} {
		if err := s.conn.Export(e.v, e.path, e.iface); err != nil {
			return err
		}
	}
	return nil
}

// baseXML introspects the base path: the ObjectManager and the children Sysroot and OS objects.
func (s *Server) baseXML() string {
	s.mu.Lock()
	children := []string{"Sysroot"}
	for _, o := range s.oses {
		children = append(children, strings.TrimPrefix(string(o.path), string(BasePath)+"/"))
	}
	s.mu.Unlock()
	return nodeXML([]introspect.Interface{objectManagerInterface}, children)
}

// osObject is the OS object of one stateroot.
type osObject struct {
	s     *Server
	name  string
	path  dbus.ObjectPath
	props *props
}

var osXML = nodeXML([]introspect.Interface{osInterface, osExperimentalInterface}, nil)

func (s *Server) exportOS(name string, ov osView) (*osObject, error) {
	o := &osObject{s: s, name: name, path: OSPath(name)}
	initial := ov.properties()
	initial["Name"] = name
	initial["CachedUpdate"] = dict{}
	initial["HasCachedUpdateRpmDiff"] = false
	var err error
	if o.props, err = exportProps(s.conn, o.path, map[string]map[string]any{OSIface: initial, OSExperimentalIface: {}}); err != nil {
		return nil, err
	}
	for iface, v := range map[string]any{
		OSIface:             osMethods{o},
		OSExperimentalIface: osExperimental{o},
		introspectableIface: introspector(func() string { return osXML }),
	} {
		if err := s.conn.Export(v, o.path, iface); err != nil {
			return nil, err
		}
	}
	return o, nil
}

func (s *Server) unexportOS(o *osObject) {
	for _, iface := range []string{OSIface, OSExperimentalIface, introspectableIface, propertiesIface} {
		_ = s.conn.Export(nil, o.path, iface)
	}
	_ = s.conn.Emit(BasePath, ObjectManagerIface+".InterfacesRemoved", o.path, []string{OSIface, OSExperimentalIface})
}

func (s *Server) emitInterfacesAdded(o *osObject) {
	_ = s.conn.Emit(BasePath, ObjectManagerIface+".InterfacesAdded", o.path, o.managed())
}

func (o *osObject) managed() map[string]map[string]dbus.Variant {
	osProps, _ := o.props.GetAll(OSIface)
	return map[string]map[string]dbus.Variant{OSIface: osProps, OSExperimentalIface: {}}
}

// objectManager is org.freedesktop.DBus.ObjectManager at the base path.
type objectManager struct{ s *Server }

// GetManagedObjects returns the Sysroot and OS objects with their interfaces and properties.
func (m objectManager) GetManagedObjects() (map[dbus.ObjectPath]map[string]map[string]dbus.Variant, *dbus.Error) {
	sys, _ := m.s.sysrootProps.GetAll(SysrootIface)
	out := map[dbus.ObjectPath]map[string]map[string]dbus.Variant{SysrootPath: {SysrootIface: sys}}
	m.s.mu.Lock()
	defer m.s.mu.Unlock()
	for _, o := range m.s.oses {
		out[o.path] = o.managed()
	}
	return out, nil
}
