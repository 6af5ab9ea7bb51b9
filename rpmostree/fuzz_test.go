package rpmostree_test

import (
	"encoding/binary"
	"testing"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

// FuzzParseDeployment feeds arbitrary deployment dicts to the parser: it must never panic, and
// what it accepts must match the dict. The input is a compact encoding of an a{sv} (see
// fuzzDict) so that every byte string is a dict, right or wrongly typed; seeds are in
// testdata/fuzz/FuzzParseDeployment (see testdata/fuzz/README.md for the encoding).
func FuzzParseDeployment(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		dict := fuzzDict(data)
		d, err := rpmostree.ParseDeployment(dict)
		if err != nil {
			return
		}
		if d.ID != dict["id"].Value() || d.OSName != dict["osname"].Value() || d.Checksum != dict["checksum"].Value() {
			t.Fatalf("parsed %+v from %v", d, dict)
		}
		if s, ok := dict["serial"]; ok && s.Value() != d.Serial {
			t.Fatalf("serial %v parsed as %d", s, d.Serial)
		}
		if ts, ok := dict["timestamp"]; ok && ts.Value() != d.Timestamp {
			t.Fatalf("timestamp %v parsed as %d", ts, d.Timestamp)
		}
		if b, ok := dict["staged"]; ok && b.Value() != d.Staged {
			t.Fatalf("staged %v parsed as %v", b, d.Staged)
		}
	})
}

// fuzzKeys are the keys an entry's first byte selects (modulo), known ones and unknown ones.
var fuzzKeys = []string{
	"id", "osname", "checksum", "serial", "version", "timestamp", "booted", "staged", "pinned",
	"unlocked", "finalization-locked", "origin", "container-image-reference",
	"container-image-reference-digest", "base-checksum", "base-version", "base-timestamp",
	"endoflife", "packages", "requested-packages", "custom-origin", "base-commit-meta",
	"modules", "x-unknown",
}

// fuzzDict decodes entries [key byte][type byte][payload] until data runs out. Types (modulo
// 13): 0 s, 1 b, 2 i, 3 t, 4 x, 5 u, 6 as, 7 (ss), 8 a{sv}, 9 o, 10 av, 11 (sss), 12 v.
// Strings are [length byte % 64][bytes]; missing bytes read as zero.
func fuzzDict(data []byte) map[string]dbus.Variant {
	r := &fuzzReader{data: data}
	dict := map[string]dbus.Variant{}
	for len(r.data) > 0 {
		key := fuzzKeys[int(r.byte())%len(fuzzKeys)]
		dict[key] = r.variant(r.byte() % 13)
	}
	return dict
}

type fuzzReader struct{ data []byte }

func (r *fuzzReader) bytes(n int) []byte {
	out := make([]byte, n)
	copy(out, r.data)
	r.data = r.data[min(n, len(r.data)):]
	return out
}

func (r *fuzzReader) byte() byte      { return r.bytes(1)[0] }
func (r *fuzzReader) str() string     { return string(r.bytes(int(r.byte()) % 64)) }
func (r *fuzzReader) u32() uint32     { return binary.LittleEndian.Uint32(r.bytes(4)) }
func (r *fuzzReader) u64() uint64     { return binary.LittleEndian.Uint64(r.bytes(8)) }
func (r *fuzzReader) count(m int) int { return int(r.byte()) % m }

func (r *fuzzReader) strs() []string {
	out := make([]string, r.count(4))
	for i := range out {
		out[i] = r.str()
	}
	return out
}

func (r *fuzzReader) variant(kind byte) dbus.Variant {
	switch kind {
	case 0:
		return dbus.MakeVariant(r.str())
	case 1:
		return dbus.MakeVariant(r.byte()&1 == 1)
	case 2:
		return dbus.MakeVariant(int32(r.u32()))
	case 3:
		return dbus.MakeVariant(r.u64())
	case 4:
		return dbus.MakeVariant(int64(r.u64()))
	case 5:
		return dbus.MakeVariant(r.u32())
	case 6:
		return dbus.MakeVariant(r.strs())
	case 7:
		return dbus.MakeVariantWithSignature([]any{r.str(), r.str()}, dbus.ParseSignatureMust("(ss)"))
	case 8:
		m := map[string]dbus.Variant{}
		for range r.count(3) {
			m[r.str()] = dbus.MakeVariant(r.str())
		}
		return dbus.MakeVariant(m)
	case 9:
		return dbus.MakeVariant(dbus.ObjectPath("/" + r.str()))
	case 10:
		vs := make([]dbus.Variant, r.count(3))
		for i := range vs {
			vs[i] = dbus.MakeVariant(r.str())
		}
		return dbus.MakeVariant(vs)
	case 11:
		return dbus.MakeVariantWithSignature([]any{r.str(), r.str(), r.str()}, dbus.ParseSignatureMust("(sss)"))
	default:
		return dbus.MakeVariant(dbus.MakeVariant(r.str()))
	}
}
