package hostfs_test

import (
	"testing"
	"unicode/utf8"

	"layerd.dev/layerd/pkg/hostfs"
)

func FuzzEscape(f *testing.F) {
	for _, s := range []string{"motd", "caf\xe9.conf", `back\slash`, "quote\"d", "tab\there", "日本.conf", "\x00", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		e := hostfs.Escape(p)
		if !utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q is not UTF-8", p, e)
		}
		back, err := hostfs.Unescape(e)
		if err != nil || back != p {
			t.Fatalf("Unescape(Escape(%q)) = %q, %v", p, back, err)
		}
		if hostfs.NeedsEscape(p) == (e == p) {
			t.Fatalf("NeedsEscape(%q) disagrees with Escape %q", p, e)
		}
	})
}
