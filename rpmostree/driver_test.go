package rpmostree_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/rpmostreed/server"
)

// golden reads a driver file serialized by GLib itself (testdata/update-driver/README.md).
func golden(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "update-driver", name))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestParseUpdateDriver(t *testing.T) {
	longUnit := "crio-" + strings.Repeat("u", 300) + ".scope"
	for _, tc := range []struct {
		name, file string
		want       rpmostree.UpdateDriver
	}{
		{"reads_a_driver_and_its_unit", "zincati.gv", rpmostree.UpdateDriver{Name: "Zincati", Unit: "zincati.service"}},
		{"reads_an_empty_unit", "layerd-no-unit.gv", rpmostree.UpdateDriver{Name: "layerd"}},
		{"skips_keys_of_other_types_and_unknown_keys", "extra-keys.gv", rpmostree.UpdateDriver{Name: "bootc-thing", Unit: "thing.service"}},
		{"reads_two_byte_framing_offsets", "long-unit.gv", rpmostree.UpdateDriver{Name: "layerd", Unit: longUnit}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := rpmostree.ParseUpdateDriver(golden(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if *d != tc.want {
				t.Fatalf("driver = %+v, want %+v", *d, tc.want)
			}
		})
	}

	for _, tc := range []struct{ name, file string }{
		{"rejects_a_file_without_a_name", "no-name.gv"},
		{"rejects_a_name_that_is_no_string", "name-not-string.gv"},
		{"rejects_an_empty_dict", "empty-dict.gv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := rpmostree.ParseUpdateDriver(golden(t, tc.file))
			if !errors.Is(err, rpmostree.ErrBadDriverFile) {
				t.Fatalf("driver %+v, err %v; want ErrBadDriverFile", d, err)
			}
		})
	}

	t.Run("rejects_every_truncation_with_a_named_error", func(t *testing.T) {
		data := golden(t, "zincati.gv")
		for n := 1; n < len(data); n++ {
			if d, err := rpmostree.ParseUpdateDriver(data[:n]); !errors.Is(err, rpmostree.ErrBadDriverFile) {
				t.Fatalf("first %d bytes: driver %+v, err %v", n, d, err)
			}
		}
	})
}

// The stand-in's encoder (what the test world's rpm-ostreed writes) against GLib's bytes.
func TestStandInEncodesDriverFilesAsGLib(t *testing.T) {
	for _, tc := range []struct{ file, name, unit string }{
		{"zincati.gv", "Zincati", "zincati.service"},
		{"layerd-no-unit.gv", "layerd", ""},
		{"long-unit.gv", "layerd", "crio-" + strings.Repeat("u", 300) + ".scope"},
	} {
		t.Run(strings.TrimSuffix(tc.file, ".gv"), func(t *testing.T) {
			got := server.EncodeDriverInfo(tc.name, tc.unit)
			if want := golden(t, tc.file); !bytes.Equal(got, want) {
				t.Fatalf("stand-in bytes\n%x\nGLib bytes\n%x", got, want)
			}
			d, err := rpmostree.ParseUpdateDriver(got)
			if err != nil || d.Name != tc.name || d.Unit != tc.unit {
				t.Fatalf("parsed %+v, %v", d, err)
			}
		})
	}
}

func TestReadUpdateDriver(t *testing.T) {
	dir := t.TempDir()
	t.Run("no_file_means_no_driver", func(t *testing.T) {
		d, err := rpmostree.ReadUpdateDriver(filepath.Join(dir, "missing.gv"))
		if d != nil || err != nil {
			t.Fatalf("driver %+v, err %v; want nil, nil", d, err)
		}
	})
	t.Run("reads_the_file", func(t *testing.T) {
		path := filepath.Join(dir, "update-driver.gv")
		if err := os.WriteFile(path, golden(t, "zincati.gv"), 0o644); err != nil {
			t.Fatal(err)
		}
		d, err := rpmostree.ReadUpdateDriver(path)
		if err != nil || d == nil || d.Name != "Zincati" {
			t.Fatalf("driver %+v, err %v", d, err)
		}
	})
	t.Run("an_unreadable_file_is_an_error_but_not_a_bad_file", func(t *testing.T) {
		d, err := rpmostree.ReadUpdateDriver(dir) // a directory
		if err == nil || errors.Is(err, rpmostree.ErrBadDriverFile) {
			t.Fatalf("driver %+v, err %v", d, err)
		}
	})
	t.Run("a_malformed_file_names_its_path", func(t *testing.T) {
		path := filepath.Join(dir, "bad.gv")
		if err := os.WriteFile(path, []byte("not a gvariant"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := rpmostree.ReadUpdateDriver(path)
		if !errors.Is(err, rpmostree.ErrBadDriverFile) || !strings.Contains(err.Error(), path) {
			t.Fatalf("err = %v", err)
		}
	})
}

// FuzzParseUpdateDriver feeds arbitrary bytes to the driver file decoder: it must never panic,
// fail only with ErrBadDriverFile, and what it accepts must survive a round trip through the
// stand-in's encoder. Seeds: GLib's files, the stand-in's, and damaged copies.
func FuzzParseUpdateDriver(f *testing.F) {
	for _, name := range []string{"zincati.gv", "layerd-no-unit.gv", "extra-keys.gv", "long-unit.gv", "no-name.gv", "name-not-string.gv"} {
		data := golden(f, name)
		f.Add(data)
		f.Add(data[:len(data)/2])
		flipped := bytes.Clone(data)
		flipped[len(flipped)-1] ^= 0x40 // the last framing offset
		f.Add(flipped)
	}
	f.Add(server.EncodeDriverInfo("layerd", "layerd-agent.scope"))
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := rpmostree.ParseUpdateDriver(data)
		if err != nil {
			if !errors.Is(err, rpmostree.ErrBadDriverFile) {
				t.Fatalf("err %v is not ErrBadDriverFile", err)
			}
			return
		}
		for _, s := range []string{d.Name, d.Unit} {
			if strings.IndexByte(s, 0) >= 0 || !utf8.ValidString(s) {
				t.Fatalf("decoded %q", s)
			}
		}
		again, err := rpmostree.ParseUpdateDriver(server.EncodeDriverInfo(d.Name, d.Unit))
		if err != nil || *again != *d {
			t.Fatalf("round trip of %+v: %+v, %v", *d, again, err)
		}
	})
}
