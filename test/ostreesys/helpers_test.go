package ostreesys

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// timed runs fn and logs how long the step took.
func timed(t *testing.T, step string, fn func() error) {
	t.Helper()
	start := time.Now()
	err := fn()
	t.Logf("step %-28s %v", step, time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
}

// newSysroot creates one sysroot for the test and removes it afterwards.
func newSysroot(t *testing.T, osname string) (*Sysroot, context.Context) {
	t.Helper()
	if err := Prerequisites(); err != nil {
		t.Fatalf("real ostree sysroot tests need root and the Debian ostree tools: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	var s *Sysroot
	timed(t, "init", func() (err error) {
		s, err = Init(ctx, filepath.Join(dir, "sysroot"), osname)
		return err
	})
	t.Cleanup(func() {
		if err := s.Remove(); err != nil {
			t.Errorf("remove sysroot: %v", err)
		}
	})
	return s, ctx
}

// commitVersion builds a tiny tree with the given /etc defaults and commits it.
func commitVersion(t *testing.T, ctx context.Context, s *Sysroot, version string, etc map[string]string) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree-"+version)
	var csum string
	timed(t, "build+commit v"+version, func() error {
		if err := BuildTree(tree, TreeOptions{Version: version, Etc: etc}); err != nil {
			return err
		}
		var err error
		csum, err = s.CommitTree(ctx, tree, s.OSName+"/stable", map[string]string{
			MetaVersion:        version,
			MetaManifestDigest: "sha256:" + strings.Repeat(version, 64)[:64],
		})
		return err
	})
	return csum
}

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func writeFile(t *testing.T, p, content string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func assertMissing(t *testing.T, p string) {
	t.Helper()
	if _, err := os.Lstat(p); !os.IsNotExist(err) {
		t.Errorf("%s: want absent, got err=%v", p, err)
	}
}

var (
	etcV1 = map[string]string{"motd": "motd v1\n", "app.conf": "level=1\n", "hostname": "default-host\n"}
	etcV2 = map[string]string{"motd": "motd v2\n", "app.conf": "level=2\n", "hostname": "default-host-2\n", "new.conf": "new in v2\n"}
)
