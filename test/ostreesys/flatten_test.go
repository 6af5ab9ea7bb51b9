package ostreesys

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// ent is one tar entry: "dir/" is a directory, "a->b" a symlink,
// "a=>b" a hardlink, anything else a file with content body.
type ent struct{ name, body string }

func layer(t *testing.T, ents ...ent) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.body))}
		switch {
		case strings.HasSuffix(e.name, "/"):
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case strings.Contains(e.name, "->"):
			n, target, _ := strings.Cut(e.name, "->")
			h.Name, h.Linkname, h.Typeflag, h.Size = n, target, tar.TypeSymlink, 0
		case strings.Contains(e.name, "=>"):
			n, target, _ := strings.Cut(e.name, "=>")
			h.Name, h.Linkname, h.Typeflag, h.Size = n, target, tar.TypeLink, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			if _, err := io.WriteString(tw, e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func flatten(t *testing.T, layers ...[]byte) (string, error) {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "root")
	rs := make([]io.Reader, len(layers))
	for i, l := range layers {
		rs[i] = bytes.NewReader(l)
	}
	return dst, FlattenLayers(dst, rs)
}

func mustFlatten(t *testing.T, layers ...[]byte) string {
	t.Helper()
	dst, err := flatten(t, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func TestFlattenLayers(t *testing.T) {
	t.Run("upper layer overrides and adds files", func(t *testing.T) {
		dst := mustFlatten(t,
			layer(t, ent{"usr/", ""}, ent{"usr/a", "a1"}, ent{"./usr/b", "b1"}),
			layer(t, ent{"usr/a", "a2"}, ent{"/usr/c", "c2"}))
		for n, want := range map[string]string{"usr/a": "a2", "usr/b": "b1", "usr/c": "c2"} {
			if got := readFile(t, filepath.Join(dst, n)); got != want {
				t.Errorf("%s = %q, want %q", n, got, want)
			}
		}
	})

	t.Run("whiteout removes a lower file and a lower directory", func(t *testing.T) {
		dst := mustFlatten(t,
			layer(t, ent{"etc/gone", "x"}, ent{"etc/keep", "k"}, ent{"opt/tree/deep/f", "f"}),
			layer(t, ent{"etc/.wh.gone", ""}, ent{"opt/.wh.tree", ""}))
		assertMissing(t, filepath.Join(dst, "etc/gone"))
		assertMissing(t, filepath.Join(dst, "opt/tree"))
		assertMissing(t, filepath.Join(dst, "etc/.wh.gone"))
		if got := readFile(t, filepath.Join(dst, "etc/keep")); got != "k" {
			t.Errorf("etc/keep = %q", got)
		}
	})

	t.Run("opaque directory hides lower content but keeps its own layer's", func(t *testing.T) {
		dst := mustFlatten(t,
			layer(t, ent{"etc/app/old.conf", "o"}, ent{"etc/app/sub/lower", "l"}, ent{"etc/other", "x"}),
			layer(t, ent{"etc/app/", ""}, ent{"etc/app/new.conf", "n"}, ent{"etc/app/sub/", ""},
				ent{"etc/app/.wh..wh..opq", ""}))
		assertMissing(t, filepath.Join(dst, "etc/app/old.conf"))
		assertMissing(t, filepath.Join(dst, "etc/app/sub/lower"))
		assertMissing(t, filepath.Join(dst, "etc/app/.wh..wh..opq"))
		if got := readFile(t, filepath.Join(dst, "etc/app/new.conf")); got != "n" {
			t.Errorf("new.conf = %q", got)
		}
		if fi, err := os.Stat(filepath.Join(dst, "etc/app/sub")); err != nil || !fi.IsDir() {
			t.Errorf("etc/app/sub from the same layer: %v", err)
		}
		if got := readFile(t, filepath.Join(dst, "etc/other")); got != "x" {
			t.Errorf("sibling of the opaque dir = %q", got)
		}
	})

	t.Run("whiteout does not remove a file of its own layer", func(t *testing.T) {
		dst := mustFlatten(t, layer(t, ent{"a", "same layer"}, ent{".wh.a", ""}))
		if got := readFile(t, filepath.Join(dst, "a")); got != "same layer" {
			t.Errorf("a = %q", got)
		}
	})

	t.Run("file replaces directory and directory replaces file", func(t *testing.T) {
		dst := mustFlatten(t,
			layer(t, ent{"x/inner", "i"}, ent{"y", "file"}),
			layer(t, ent{"x", "now a file"}, ent{"y/", ""}, ent{"y/z", "z"}))
		if got := readFile(t, filepath.Join(dst, "x")); got != "now a file" {
			t.Errorf("x = %q", got)
		}
		if got := readFile(t, filepath.Join(dst, "y/z")); got != "z" {
			t.Errorf("y/z = %q", got)
		}
	})

	t.Run("symlinks and hardlinks are recreated", func(t *testing.T) {
		dst := mustFlatten(t, layer(t, ent{"usr/bin/tool", "t"}, ent{"bin->usr/bin", ""},
			ent{"usr/bin/alias=>usr/bin/tool", ""}, ent{"lib->usr/lib", ""}, ent{"lib/via-link", "v"}))
		if l, err := os.Readlink(filepath.Join(dst, "bin")); err != nil || l != "usr/bin" {
			t.Errorf("bin -> %q, %v", l, err)
		}
		a, _ := os.Stat(filepath.Join(dst, "usr/bin/tool"))
		b, _ := os.Stat(filepath.Join(dst, "usr/bin/alias"))
		if a == nil || b == nil || !os.SameFile(a, b) {
			t.Errorf("usr/bin/alias is not a hardlink of usr/bin/tool")
		}
		if got := readFile(t, filepath.Join(dst, "usr/lib/via-link")); got != "v" {
			t.Errorf("entry through in-root relative symlink: %q", got)
		}
	})

	t.Run("dot-dot entry is rejected", func(t *testing.T) {
		outside := t.TempDir()
		dst, err := flatten(t, layer(t, ent{"usr/../../" + filepath.Base(outside) + "/pwned", "x"}))
		if err == nil || !strings.Contains(err.Error(), "escapes the root") {
			t.Fatalf("err = %v", err)
		}
		assertMissing(t, dst) // created by FlattenLayers, removed on failure
	})

	t.Run("traversal of an absolute symlink is rejected", func(t *testing.T) {
		outside := t.TempDir()
		_, err := flatten(t, layer(t, ent{"evil->" + outside, ""}), layer(t, ent{"evil/pwned", "x"}))
		if err == nil || !strings.Contains(err.Error(), "absolute symlink") {
			t.Fatalf("err = %v", err)
		}
		assertMissing(t, filepath.Join(outside, "pwned"))
	})

	t.Run("traversal of a symlink climbing out of the root is rejected", func(t *testing.T) {
		_, err := flatten(t, layer(t, ent{"a/up->../../..", ""}, ent{"a/up/pwned", "x"}))
		if err == nil || !strings.Contains(err.Error(), "out of the root") {
			t.Fatalf("err = %v", err)
		}
	})

	t.Run("whiteout through an absolute symlink is rejected", func(t *testing.T) {
		outside := t.TempDir()
		writeFile(t, filepath.Join(outside, "victim"), "v")
		_, err := flatten(t, layer(t, ent{"evil->" + outside, ""}), layer(t, ent{"evil/.wh.victim", ""}))
		if err == nil {
			t.Fatal("whiteout through absolute symlink accepted")
		}
		if got := readFile(t, filepath.Join(outside, "victim")); got != "v" {
			t.Errorf("victim outside the root changed: %q", got)
		}
	})

	t.Run("hardlink to a path outside the root is rejected", func(t *testing.T) {
		_, err := flatten(t, layer(t, ent{"x=>../../etc/passwd", ""}))
		if err == nil {
			t.Fatal("escaping hardlink accepted")
		}
	})
}

func TestPrepareTree(t *testing.T) {
	t.Run("top-level etc moves to usr/etc", func(t *testing.T) {
		dst := mustFlatten(t, layer(t, ent{"etc/motd", "m"}, ent{"usr/lib/os-release", "ID=x\n"}))
		if err := PrepareTree(dst); err != nil {
			t.Fatal(err)
		}
		assertMissing(t, filepath.Join(dst, "etc"))
		if got := readFile(t, filepath.Join(dst, "usr/etc/motd")); got != "m" {
			t.Errorf("usr/etc/motd = %q", got)
		}
	})

	t.Run("etc merges into an existing usr/etc with etc winning", func(t *testing.T) {
		dst := mustFlatten(t, layer(t, ent{"usr/etc/a", "usr-a"}, ent{"usr/etc/b", "usr-b"},
			ent{"usr/etc/d/x", "ux"}, ent{"etc/a", "etc-a"}, ent{"etc/d/y", "ey"}))
		if err := PrepareTree(dst); err != nil {
			t.Fatal(err)
		}
		for n, want := range map[string]string{"a": "etc-a", "b": "usr-b", "d/x": "ux", "d/y": "ey"} {
			if got := readFile(t, filepath.Join(dst, "usr/etc", n)); got != want {
				t.Errorf("usr/etc/%s = %q, want %q", n, got, want)
			}
		}
		assertMissing(t, filepath.Join(dst, "etc"))
	})

	t.Run("required directories and links are created, existing ones kept", func(t *testing.T) {
		dst := mustFlatten(t, layer(t, ent{"bin/", ""}, ent{"bin/sh", "sh"}))
		if err := PrepareTree(dst); err != nil {
			t.Fatal(err)
		}
		for _, d := range []string{"sysroot", "var", "boot", "dev", "proc", "run", "sys", "tmp", "usr/etc"} {
			if fi, err := os.Lstat(filepath.Join(dst, d)); err != nil || !fi.IsDir() {
				t.Errorf("%s: %v", d, err)
			}
		}
		for n, want := range map[string]string{"lib": "usr/lib", "ostree": "sysroot/ostree", "home": "var/home", "root": "var/roothome"} {
			if l, err := os.Readlink(filepath.Join(dst, n)); err != nil || l != want {
				t.Errorf("%s -> %q (%v), want %s", n, l, err, want)
			}
		}
		if fi, err := os.Lstat(filepath.Join(dst, "bin")); err != nil || !fi.IsDir() {
			t.Errorf("existing bin directory replaced: %v", err)
		}
	})
}
