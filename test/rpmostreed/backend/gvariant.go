package backend

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"

	"github.com/godbus/dbus/v5"
)

// A minimal reader for serialized GVariant (normal form, little endian), the
// on-disk format of ostree commit objects and of libostree's
// /run/ostree/staged-deployment. Values are decoded straight into the Go
// types godbus marshals (a{sv} → map[string]dbus.Variant, tuples → structs
// built with reflect.StructOf), so commit metadata can be handed to D-Bus
// with its real types. Maybe types (m) have no D-Bus equivalent and fail.

// gvType is a parsed GVariant type.
type gvType struct {
	sig   string // the complete type string
	kind  byte   // first character: b y n q i u x t d s o g v a ( {
	elem  *gvType
	items []*gvType // tuple members, or key and value of a dict entry
	align int
	fixed int // fixed size in bytes, 0 when variable-size
}

// parseGVType parses one complete type from the front of sig.
func parseGVType(sig string) (*gvType, string, error) {
	if sig == "" {
		return nil, "", errors.New("gvariant: empty type")
	}
	c := sig[0]
	switch c {
	case 'b', 'y':
		return &gvType{sig: sig[:1], kind: c, align: 1, fixed: 1}, sig[1:], nil
	case 'n', 'q':
		return &gvType{sig: sig[:1], kind: c, align: 2, fixed: 2}, sig[1:], nil
	case 'i', 'u':
		return &gvType{sig: sig[:1], kind: c, align: 4, fixed: 4}, sig[1:], nil
	case 'x', 't', 'd':
		return &gvType{sig: sig[:1], kind: c, align: 8, fixed: 8}, sig[1:], nil
	case 's', 'o', 'g':
		return &gvType{sig: sig[:1], kind: c, align: 1}, sig[1:], nil
	case 'v':
		return &gvType{sig: sig[:1], kind: c, align: 8}, sig[1:], nil
	case 'a':
		e, rest, err := parseGVType(sig[1:])
		if err != nil {
			return nil, "", err
		}
		return &gvType{sig: sig[:len(sig)-len(rest)], kind: c, elem: e, align: e.align}, rest, nil
	case '(', '{':
		closer := byte(')')
		if c == '{' {
			closer = '}'
		}
		t := &gvType{kind: c, align: 1}
		rest := sig[1:]
		allFixed := true
		for {
			if rest == "" {
				return nil, "", fmt.Errorf("gvariant: unterminated type %q", sig)
			}
			if rest[0] == closer {
				rest = rest[1:]
				break
			}
			m, r, err := parseGVType(rest)
			if err != nil {
				return nil, "", err
			}
			t.items = append(t.items, m)
			t.align = max(t.align, m.align)
			allFixed = allFixed && m.fixed > 0
			rest = r
		}
		if c == '{' && len(t.items) != 2 {
			return nil, "", fmt.Errorf("gvariant: dict entry %q needs two types", sig)
		}
		t.sig = sig[:len(sig)-len(rest)]
		if allFixed {
			size := 0
			for _, m := range t.items {
				size = alignUp(size, m.align) + m.fixed
			}
			t.fixed = max(alignUp(size, t.align), 1) // the unit tuple takes one byte
		}
		return t, rest, nil
	}
	return nil, "", fmt.Errorf("gvariant: unsupported type %q", sig)
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }

// goType is the Go type godbus uses for t.
func (t *gvType) goType() (reflect.Type, error) {
	switch t.kind {
	case 'b':
		return reflect.TypeOf(false), nil
	case 'y':
		return reflect.TypeOf(byte(0)), nil
	case 'n':
		return reflect.TypeOf(int16(0)), nil
	case 'q':
		return reflect.TypeOf(uint16(0)), nil
	case 'i':
		return reflect.TypeOf(int32(0)), nil
	case 'u':
		return reflect.TypeOf(uint32(0)), nil
	case 'x':
		return reflect.TypeOf(int64(0)), nil
	case 't':
		return reflect.TypeOf(uint64(0)), nil
	case 'd':
		return reflect.TypeOf(float64(0)), nil
	case 's':
		return reflect.TypeOf(""), nil
	case 'o':
		return reflect.TypeOf(dbus.ObjectPath("")), nil
	case 'g':
		return reflect.TypeOf(dbus.Signature{}), nil
	case 'v':
		return reflect.TypeOf(dbus.Variant{}), nil
	case 'a':
		if t.elem.kind == '{' {
			k, err := t.elem.items[0].goType()
			if err != nil {
				return nil, err
			}
			v, err := t.elem.items[1].goType()
			if err != nil {
				return nil, err
			}
			if !k.Comparable() {
				return nil, fmt.Errorf("gvariant: dict key type %s", t.elem.items[0].sig)
			}
			return reflect.MapOf(k, v), nil
		}
		e, err := t.elem.goType()
		if err != nil {
			return nil, err
		}
		return reflect.SliceOf(e), nil
	case '(':
		fields := make([]reflect.StructField, len(t.items))
		for i, m := range t.items {
			ft, err := m.goType()
			if err != nil {
				return nil, err
			}
			fields[i] = reflect.StructField{Name: fmt.Sprintf("F%d", i), Type: ft}
		}
		return reflect.StructOf(fields), nil
	}
	return nil, fmt.Errorf("gvariant: no D-Bus type for %q", t.sig)
}

// decodeGVariant decodes data as a value of type sig.
func decodeGVariant(sig string, data []byte) (any, error) {
	t, rest, err := parseGVType(sig)
	if err != nil {
		return nil, err
	}
	if rest != "" {
		return nil, fmt.Errorf("gvariant: %q is not a single type", sig)
	}
	v, err := t.decode(data)
	if err != nil {
		return nil, err
	}
	return v.Interface(), nil
}

func offsetSize(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= math.MaxUint8:
		return 1
	case n <= math.MaxUint16:
		return 2
	case n <= math.MaxUint32:
		return 4
	}
	return 8
}

func readOffset(b []byte, size int) int {
	switch size {
	case 1:
		return int(b[0])
	case 2:
		return int(binary.LittleEndian.Uint16(b))
	case 4:
		return int(binary.LittleEndian.Uint32(b))
	}
	return int(binary.LittleEndian.Uint64(b))
}

var errGVShort = errors.New("gvariant: data too short")

func (t *gvType) decode(data []byte) (reflect.Value, error) {
	if t.fixed > 0 && len(data) != t.fixed {
		return reflect.Value{}, fmt.Errorf("gvariant: %s needs %d bytes, have %d", t.sig, t.fixed, len(data))
	}
	le := binary.LittleEndian
	switch t.kind {
	case 'b':
		return reflect.ValueOf(data[0] != 0), nil
	case 'y':
		return reflect.ValueOf(data[0]), nil
	case 'n':
		return reflect.ValueOf(int16(le.Uint16(data))), nil
	case 'q':
		return reflect.ValueOf(le.Uint16(data)), nil
	case 'i':
		return reflect.ValueOf(int32(le.Uint32(data))), nil
	case 'u':
		return reflect.ValueOf(le.Uint32(data)), nil
	case 'x':
		return reflect.ValueOf(int64(le.Uint64(data))), nil
	case 't':
		return reflect.ValueOf(le.Uint64(data)), nil
	case 'd':
		return reflect.ValueOf(math.Float64frombits(le.Uint64(data))), nil
	case 's', 'o', 'g':
		if len(data) == 0 || data[len(data)-1] != 0 {
			return reflect.Value{}, fmt.Errorf("gvariant: string not NUL-terminated")
		}
		s := string(data[:len(data)-1])
		switch t.kind {
		case 'o':
			return reflect.ValueOf(dbus.ObjectPath(s)), nil
		case 'g':
			sig, err := dbus.ParseSignature(s)
			return reflect.ValueOf(sig), err
		}
		return reflect.ValueOf(s), nil
	case 'v':
		return t.decodeVariant(data)
	case 'a':
		return t.decodeArray(data)
	case '(':
		return t.decodeTuple(data)
	}
	return reflect.Value{}, fmt.Errorf("gvariant: cannot decode %q", t.sig)
}

func (t *gvType) decodeVariant(data []byte) (reflect.Value, error) {
	nul := -1
	for i := len(data) - 1; i >= 0; i-- {
		if data[i] == 0 {
			nul = i
			break
		}
	}
	if nul < 0 {
		return reflect.Value{}, errors.New("gvariant: variant without type")
	}
	inner, rest, err := parseGVType(string(data[nul+1:]))
	if err != nil || rest != "" {
		return reflect.Value{}, fmt.Errorf("gvariant: variant type %q: %v", data[nul+1:], err)
	}
	v, err := inner.decode(data[:nul])
	if err != nil {
		return reflect.Value{}, err
	}
	sig, err := dbus.ParseSignature(inner.sig)
	if err != nil {
		return reflect.Value{}, fmt.Errorf("gvariant: variant type %q: %w", inner.sig, err)
	}
	return reflect.ValueOf(dbus.MakeVariantWithSignature(v.Interface(), sig)), nil
}

// elements splits an array's data into its element slices.
func (t *gvType) elements(data []byte) ([][]byte, error) {
	e := t.elem
	if len(data) == 0 {
		return nil, nil
	}
	if e.fixed > 0 {
		if len(data)%e.fixed != 0 {
			return nil, fmt.Errorf("gvariant: %s: %d bytes is not a multiple of %d", t.sig, len(data), e.fixed)
		}
		out := make([][]byte, 0, len(data)/e.fixed)
		for i := 0; i < len(data); i += e.fixed {
			out = append(out, data[i:i+e.fixed])
		}
		return out, nil
	}
	osz := offsetSize(len(data))
	last := readOffset(data[len(data)-osz:], osz)
	if last > len(data) || (len(data)-last)%osz != 0 {
		return nil, fmt.Errorf("gvariant: %s: bad framing offsets", t.sig)
	}
	n := (len(data) - last) / osz
	out := make([][]byte, 0, n)
	start := 0
	for i := 0; i < n; i++ {
		end := readOffset(data[last+i*osz:], osz)
		start = alignUp(start, e.align)
		if start > end || end > last {
			return nil, errGVShort
		}
		out = append(out, data[start:end])
		start = end
	}
	return out, nil
}

func (t *gvType) decodeArray(data []byte) (reflect.Value, error) {
	gt, err := t.goType()
	if err != nil {
		return reflect.Value{}, err
	}
	parts, err := t.elements(data)
	if err != nil {
		return reflect.Value{}, err
	}
	if t.elem.kind == '{' {
		m := reflect.MakeMapWithSize(gt, len(parts))
		for _, p := range parts {
			kv, err := t.elem.tupleMembers(p)
			if err != nil {
				return reflect.Value{}, err
			}
			m.SetMapIndex(kv[0], kv[1])
		}
		return m, nil
	}
	if t.elem.kind == 'y' {
		return reflect.ValueOf(append([]byte(nil), data...)), nil
	}
	s := reflect.MakeSlice(gt, 0, len(parts))
	for _, p := range parts {
		v, err := t.elem.decode(p)
		if err != nil {
			return reflect.Value{}, err
		}
		s = reflect.Append(s, v)
	}
	return s, nil
}

// tupleMembers decodes the members of a tuple or dict entry.
func (t *gvType) tupleMembers(data []byte) ([]reflect.Value, error) {
	osz := offsetSize(len(data))
	frameEnd := len(data)
	pos := 0
	out := make([]reflect.Value, len(t.items))
	for i, m := range t.items {
		pos = alignUp(pos, m.align)
		var end int
		switch {
		case m.fixed > 0:
			end = pos + m.fixed
		case i == len(t.items)-1:
			end = frameEnd
		default:
			if osz == 0 || frameEnd-osz < pos {
				return nil, errGVShort
			}
			frameEnd -= osz
			end = readOffset(data[frameEnd:], osz)
		}
		if pos > end || end > len(data) {
			return nil, fmt.Errorf("gvariant: %s: member %d out of bounds", t.sig, i)
		}
		v, err := m.decode(data[pos:end])
		if err != nil {
			return nil, err
		}
		out[i] = v
		pos = end
	}
	return out, nil
}

func (t *gvType) decodeTuple(data []byte) (reflect.Value, error) {
	gt, err := t.goType()
	if err != nil {
		return reflect.Value{}, err
	}
	members, err := t.tupleMembers(data)
	if err != nil {
		return reflect.Value{}, err
	}
	s := reflect.New(gt).Elem()
	for i, m := range members {
		s.Field(i).Set(m)
	}
	return s, nil
}
