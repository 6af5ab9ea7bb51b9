package backend

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/godbus/dbus/v5"
)

// The fixtures were written by Debian's libostree 2022.7: a staged-deployment
// file from `ostree admin deploy --stage` and a commit object from
// `ostree commit --add-metadata-string=version=2
// --add-metadata-string=ostree.manifest-digest=sha256:abc`.
const fixtureCommit = "1c008585d49e04418061659c7e5a254cd8f9cf9be8ac47502774a86beb5075db"

func TestGVariantDecodesLibostreeFiles(t *testing.T) {
	t.Run("staged deployment file yields target and merge deployment", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join("testdata", "staged-deployment-2022.7"))
		if err != nil {
			t.Fatal(err)
		}
		v, err := decodeGVariant("a{sv}", data)
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		top := v.(map[string]dbus.Variant)
		target := top["target"].Value().(map[string]dbus.Variant)
		if got := target["name"].Value(); got != fixtureCommit+".0" {
			t.Errorf("target name = %v", got)
		}
		if got := target["osname"].Value(); got != "fcos" {
			t.Errorf("target osname = %v", got)
		}
		merge := top["merge-deployment"].Value().(map[string]dbus.Variant)
		if got := merge["name"].Value(); got != "5db2b0702f33d8927aab84c68add547a279c03b7024ca3a846c5ced8c9ad0d90.0" {
			t.Errorf("merge name = %v", got)
		}
	})
	t.Run("commit object yields typed metadata, subject and big-endian timestamp", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join("testdata", fixtureCommit+".commit"))
		if err != nil {
			t.Fatal(err)
		}
		c, err := parseCommit(fixtureCommit, data)
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if c.Subject != "v2" || c.Timestamp != 1795776699 {
			t.Errorf("subject %q timestamp %d", c.Subject, c.Timestamp)
		}
		if c.metaString("version") != "2" || c.metaString(metaManifestDigest) != "sha256:abc" {
			t.Errorf("metadata %v", c.Metadata)
		}
		binding := c.Metadata["ostree.ref-binding"]
		if binding.Signature().String() != "as" || !reflect.DeepEqual(binding.Value(), []string{"fcos/v2"}) {
			t.Errorf("ref-binding = %v (%s)", binding.Value(), binding.Signature())
		}
	})
	t.Run("tuples decode to structs godbus can marshal", func(t *testing.T) {
		// (sy) with one framing offset: "ab\0" then 0x07, offset 3.
		v, err := decodeGVariant("(sy)", []byte{'a', 'b', 0, 7, 3})
		if err != nil {
			t.Fatalf("decode: %v", err)
		}
		if sig := dbus.SignatureOf(v).String(); sig != "(sy)" {
			t.Errorf("signature %s", sig)
		}
		rv := reflect.ValueOf(v)
		if rv.Field(0).String() != "ab" || rv.Field(1).Uint() != 7 {
			t.Errorf("value %#v", v)
		}
	})
	t.Run("truncated data is an error, not a panic", func(t *testing.T) {
		data, err := os.ReadFile(filepath.Join("testdata", "staged-deployment-2022.7"))
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < len(data); n += 7 {
			_, _ = decodeGVariant("a{sv}", data[:n])
		}
	})
}

func TestParseContainerRefspec(t *testing.T) {
	cases := []struct {
		name, in  string
		sig       sigVerify
		transport string
		image     string
		err       string
	}{
		{name: "unverified registry shorthand", in: "ostree-unverified-registry:quay.io/a/b:1",
			sig: sigPolicyAllowInsecure, transport: "registry", image: "quay.io/a/b:1"},
		{name: "unverified image with docker transport", in: "ostree-unverified-image:docker://127.0.0.1:5000/os@sha256:aa",
			sig: sigPolicyAllowInsecure, transport: "registry", image: "127.0.0.1:5000/os@sha256:aa"},
		{name: "signed image with registry transport", in: "ostree-image-signed:registry:x/y:z",
			sig: sigPolicy, transport: "registry", image: "x/y:z"},
		{name: "legacy ostree:// prefix is stripped", in: "ostree://ostree-image-signed:docker://x/y",
			sig: sigPolicy, transport: "registry", image: "x/y"},
		{name: "remote registry keeps its remote", in: "ostree-remote-registry:fedora:quay.io/f/c",
			sig: sigOstreeRemote, transport: "registry", image: "quay.io/f/c"},
		{name: "docker without slashes is refused", in: "ostree-image-signed:docker:x/y",
			err: "Missing // in docker:// in docker:x/y"},
		{name: "unknown transport is refused", in: "ostree-image-signed:ftp:x",
			err: "Unknown transport 'ftp'"},
		{name: "unknown scheme is refused", in: "ostree-magic:registry:x",
			err: "Invalid ostree image reference scheme: ostree-magic"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := parseContainerRefspec(c.in)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("err = %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.SigVerify != c.sig || r.Transport != c.transport || r.Name != c.image {
				t.Errorf("got %+v", r)
			}
		})
	}
	t.Run("remote refspecs fail as unsupported when pulled", func(t *testing.T) {
		r, _ := parseContainerRefspec("ostree-remote-image:fedora:docker://quay.io/f/c")
		if _, err := r.imageReference(""); err == nil {
			t.Fatal("want an error")
		}
	})
	t.Run("a revision pins the registry reference by digest", func(t *testing.T) {
		got := withDigest("127.0.0.1:5000/os:v1", "sha256:ab")
		if got != "127.0.0.1:5000/os@sha256:ab" {
			t.Errorf("got %s", got)
		}
	})
	t.Run("image refs escape to valid ostree refs", func(t *testing.T) {
		got := imageRefName(containerRef{Transport: "registry", Name: "127.0.0.1:5000/os:v1"})
		if got != "ostree/container/image/registry_3A_127.0.0.1_3A_5000/os_3A_v1" {
			t.Errorf("got %s", got)
		}
	})
}

// FuzzDecodeGVariant checks that arbitrary bytes never panic the decoder
// (the staged-deployment file and commit objects are read from disk).
func FuzzDecodeGVariant(f *testing.F) {
	for _, name := range []string{"staged-deployment-2022.7", fixtureCommit + ".commit"} {
		data, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{'a', 'b', 0, 7, 3})
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, sig := range []string{"a{sv}", commitType, "(sy)", "av", "a(say)"} {
			_, _ = decodeGVariant(sig, data)
		}
	})
}
