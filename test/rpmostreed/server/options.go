package server

import "github.com/godbus/dbus/v5"

// vardict reads options the way rpm-ostree does (g_variant_dict_lookup with a fixed type): a
// key sent with another variant type is ignored, as if it were absent.
type vardict map[string]dbus.Variant

func (d vardict) boolOr(key string, dflt bool) bool {
	if b, ok := d[key].Value().(bool); ok && d[key].Signature().String() == "b" {
		return b
	}
	return dflt
}

func (d vardict) bool(key string) bool { return d.boolOr(key, false) }

func (d vardict) str(key string) string {
	if s, ok := d[key].Value().(string); ok && d[key].Signature().String() == "s" {
		return s
	}
	return ""
}
