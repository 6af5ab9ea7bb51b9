package server

import (
	"fmt"
	"reflect"
	"sync"

	"github.com/godbus/dbus/v5"
)

// props implements org.freedesktop.DBus.Properties for one object: read-only properties,
// replaced whole and announced with one PropertiesChanged per update. (godbus's prop package
// merges map values into the old map and re-infers variant signatures on update, which would
// corrupt deployment dicts.)
type props struct {
	conn *dbus.Conn
	path dbus.ObjectPath

	mu     sync.RWMutex
	values map[string]map[string]dbus.Variant // interface → name → value
}

// exportProps exports initial (interface → name → Go value) at path.
func exportProps(conn *dbus.Conn, path dbus.ObjectPath, initial map[string]map[string]any) (*props, error) {
	p := &props{conn: conn, path: path, values: map[string]map[string]dbus.Variant{}}
	for iface, m := range initial {
		p.values[iface] = map[string]dbus.Variant{}
		for name, v := range m {
			p.values[iface][name] = dbus.MakeVariant(v)
		}
	}
	if err := conn.Export(p, path, propertiesIface); err != nil {
		return nil, err
	}
	return p, nil
}

// Get implements Properties.Get.
func (p *props) Get(iface, name string) (dbus.Variant, *dbus.Error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m, ok := p.values[iface]
	if !ok {
		return dbus.Variant{}, invalidArgs("No such interface '%s'", iface)
	}
	v, ok := m[name]
	if !ok {
		return dbus.Variant{}, invalidArgs("No such property '%s'", name)
	}
	return v, nil
}

// GetAll implements Properties.GetAll.
func (p *props) GetAll(iface string) (map[string]dbus.Variant, *dbus.Error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	m, ok := p.values[iface]
	if !ok {
		return nil, invalidArgs("No such interface '%s'", iface)
	}
	out := make(map[string]dbus.Variant, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out, nil
}

// Set implements Properties.Set: every property is read-only.
func (p *props) Set(iface, name string, _ dbus.Variant) *dbus.Error {
	if _, err := p.Get(iface, name); err != nil {
		return err
	}
	return invalidArgs("Property '%s' is not writable", name)
}

// update replaces values and emits one PropertiesChanged with those that changed.
func (p *props) update(iface string, values map[string]any) {
	p.mu.Lock()
	changed := map[string]dbus.Variant{}
	for name, v := range values {
		nv := dbus.MakeVariant(v)
		if old, ok := p.values[iface][name]; ok && old.Signature() == nv.Signature() && reflect.DeepEqual(old.Value(), v) {
			continue
		}
		p.values[iface][name] = nv
		changed[name] = nv
	}
	p.mu.Unlock()
	if len(changed) == 0 {
		return
	}
	// Errors mean the bus connection is gone; nothing is left to notify.
	_ = p.conn.Emit(p.path, propertiesIface+".PropertiesChanged", iface, changed, []string{})
}

func invalidArgs(format string, args ...any) *dbus.Error {
	return dbus.NewError("org.freedesktop.DBus.Error.InvalidArgs", []any{fmt.Sprintf(format, args...)})
}
