package nspawn

import (
	"os"
	"path/filepath"
	"testing"
)

func TestAptMirror(t *testing.T) {
	cases := []struct {
		name  string
		files map[string]string
		want  string
	}{
		{
			name: "deb822 sources pick the stanza serving the suite",
			files: map[string]string{"sources.list.d/debian.sources": `Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
`},
			want: "http://deb.debian.org/debian",
		},
		{
			name: "one-line sources with options and a trailing slash",
			files: map[string]string{"sources.list": `# comment
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian/ bookworm main contrib
`},
			want: "http://mirror.example/debian",
		},
		{
			name: "disabled deb822 stanzas and deb-src types are ignored",
			files: map[string]string{"sources.list.d/a.sources": `Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm

Types: deb-src deb
URIs: http://second.example/debian
Suites: bookworm
`},
			want: "http://second.example/debian",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, content := range c.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := AptMirror(dir, "bookworm")
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("AptMirror = %q, want %q", got, c.want)
			}
		})
	}
	t.Run("no source for the suite is an error", func(t *testing.T) {
		if _, err := AptMirror(t.TempDir(), "bookworm"); err == nil {
			t.Error("AptMirror found a mirror in an empty apt dir")
		}
	})
}
