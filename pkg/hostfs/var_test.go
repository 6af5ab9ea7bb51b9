package hostfs_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"layerd.dev/layerd/pkg/hostfs"
)

const bigFiles = 10_000

func noVar(string) {}

// varV2 ships content under /var like a Containerfile would.
func varV2(tree string) {
	v := filepath.Join(tree, "var")
	mustWrite(filepath.Join(v, "lib/mytool/state.db"), "db from the image\n")
	mustDo(os.MkdirAll(filepath.Join(v, "log/mytool"), 0o750))
	mustDo(os.Chmod(filepath.Join(v, "log/mytool"), 0o750))
	mustDo(os.Chown(filepath.Join(v, "log/mytool"), 1000, 1001))
	mustDo(unix.Setxattr(filepath.Join(v, "lib/mytool/state.db"), "user.layerd", []byte("file-label"), 0))
	mustDo(unix.Setxattr(filepath.Join(v, "log/mytool"), "user.layerd", []byte("dir-label"), 0))
	mustDo(os.Symlink("state.db", filepath.Join(v, "lib/mytool/current")))
	mustDo(os.MkdirAll(filepath.Join(v, "lib/loop"), 0o755))
	mustDo(os.Symlink("b", filepath.Join(v, "lib/loop/a")))
	mustDo(os.Symlink("a", filepath.Join(v, "lib/loop/b")))
	mustDo(os.Symlink("self", filepath.Join(v, "lib/loop/self")))
	mustDo(os.Symlink("../../../../../../etc/shadow", filepath.Join(v, "lib/loop/out")))
	mustWrite(filepath.Join(v, "lib/pipe"), "a file in the image\n")
	mustWrite(filepath.Join(v, "lib/covered/x"), "x\n")
	mustWrite(filepath.Join(tree, "usr/lib/tmpfiles.d/mytool.conf"),
		"# comment\nd /var/lib/covered 0755 root root -\nL+ /var/lib/link - - - - /x\nz /var/lib/mytool - - -\n")
	mustWrite(filepath.Join(v, "lib/existing.db"), "image version\n")
	mustWrite(filepath.Join(v, "lib/typed"), "a file in the image\n")
	for i := range bigFiles {
		mustWrite(filepath.Join(v, fmt.Sprintf("lib/big/d%02d/f%05d", i%100, i)), "small\n")
	}
}

func TestVarOnRealDeployments(t *testing.T) {
	t.Parallel()
	n, ctx := newNode(t, noVar)
	liveVar := n.s.StaterootVar()
	write(t, liveVar, "lib/existing.db", "the host's own data\n", 0o600)
	must(t, os.MkdirAll(filepath.Join(liveVar, "lib/typed"), 0o755))
	// ostree commits no FIFO: the one met is the host's, where the image
	// ships a file. Reading it would hang the preview.
	must(t, syscall.Mkfifo(filepath.Join(liveVar, "lib/pipe"), 0o644))
	staged := n.stage(t, ctx, varV2)
	h := n.host(t, hostfs.Limits{})
	rep, err := h.PreviewVar(ctx, ref(staged))
	if err != nil {
		t.Fatal(err)
	}
	status := map[string]hostfs.VarEntry{}
	for _, e := range rep.Entries {
		status[e.RawPath()] = e
	}

	t.Run("reports what the host lacks, within limits", func(t *testing.T) {
		want := map[string]hostfs.VarStatus{
			"lib/mytool":          hostfs.VarMissing,
			"lib/mytool/state.db": hostfs.VarMissing,
			"lib/mytool/current":  hostfs.VarMissing,
			"log/mytool":          hostfs.VarMissing,
			"lib/loop/a":          hostfs.VarMissing,
			"lib/loop/b":          hostfs.VarMissing,
			"lib/loop/self":       hostfs.VarMissing,
			"lib/loop/out":        hostfs.VarMissing,
			"lib/pipe":            hostfs.VarTypeDiffers,
			"lib/covered":         hostfs.VarCovered,
			"lib/covered/x":       hostfs.VarMissing,
			"lib/existing.db":     hostfs.VarDiffers,
			"lib/typed":           hostfs.VarTypeDiffers,
			"lib/big/d42/f00042":  hostfs.VarMissing,
		}
		for p, s := range want {
			if got := status[p].Status; got != s {
				t.Errorf("%q: status %q, want %q", p, got, s)
			}
		}
		if e := status["lib/covered"]; e.CoveredBy != "mytool.conf:2" {
			t.Errorf("lib/covered covered by %q", e.CoveredBy)
		}
		if rep.Truncated || rep.Limit != "" || rep.Counts[hostfs.VarMissing] < bigFiles+100 {
			t.Errorf("truncated=%v limit=%q counts=%v", rep.Truncated, rep.Limit, rep.Counts)
		}
	})

	t.Run("a limit hit is said in the report", func(t *testing.T) {
		small, err := n.host(t, hostfs.Limits{MaxFiles: 500}).PreviewVar(ctx, ref(staged))
		if err != nil {
			t.Fatal(err)
		}
		if !small.Truncated || !strings.HasPrefix(small.Limit, "max-files") || small.FilesVisited > 500 {
			t.Errorf("truncated=%v limit=%q visited=%d", small.Truncated, small.Limit, small.FilesVisited)
		}
	})

	results, err := h.CreateMissingVar(ctx, rep)
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]hostfs.VarResult{}
	for _, r := range results {
		actions[r.Path] = r
	}

	t.Run("creates what is missing with mode and owner", func(t *testing.T) {
		if got := readString(t, filepath.Join(liveVar, "lib/mytool/state.db")); got != "db from the image\n" {
			t.Errorf("state.db = %q", got)
		}
		fi, err := os.Lstat(filepath.Join(liveVar, "log/mytool"))
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
			t.Fatalf("log/mytool: %v %v", fi, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 1001 {
			t.Errorf("log/mytool owner %d:%d", st.Uid, st.Gid)
		}
		for p, target := range map[string]string{"lib/mytool/current": "state.db", "lib/loop/a": "b", "lib/loop/self": "self"} {
			if got, err := os.Readlink(filepath.Join(liveVar, p)); err != nil || got != target {
				t.Errorf("%s -> %q, %v", p, got, err)
			}
		}
		if _, err := os.Lstat(filepath.Join(liveVar, "lib/big/d99/f09999")); err != nil {
			t.Error(err)
		}
		for p, want := range map[string]string{"lib/mytool/state.db": "file-label", "log/mytool": "dir-label"} {
			if v, err := getxattr(filepath.Join(liveVar, p), "user.layerd"); err != nil || v != want {
				t.Errorf("%s xattr %q, %v", p, v, err)
			}
		}
		if r := actions["lib/mytool/state.db"]; r.Action != hostfs.Created || r.Error != "" {
			t.Errorf("state.db result %+v", r)
		}
	})

	t.Run("never overwrites anything", func(t *testing.T) {
		if got := readString(t, filepath.Join(liveVar, "lib/existing.db")); got != "the host's own data\n" {
			t.Errorf("existing.db overwritten: %q", got)
		}
		if r := actions["lib/existing.db"]; r.Action != hostfs.LeftUntouched || r.Status != hostfs.VarDiffers {
			t.Errorf("existing.db result %+v", r)
		}
		if fi, err := os.Lstat(filepath.Join(liveVar, "lib/typed")); err != nil || !fi.IsDir() {
			t.Errorf("lib/typed: %v %v", fi, err)
		}
		if fi, err := os.Lstat(filepath.Join(liveVar, "lib/pipe")); err != nil || fi.Mode()&os.ModeNamedPipe == 0 {
			t.Errorf("lib/pipe: %v %v", fi, err)
		}
		if _, err := os.Lstat(filepath.Join(liveVar, "lib/covered")); !os.IsNotExist(err) {
			t.Errorf("lib/covered (tmpfiles.d creates it): created (%v)", err)
		}
	})

	t.Run("a second preview finds nothing missing", func(t *testing.T) {
		again, err := h.PreviewVar(ctx, ref(staged))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range again.Missing() {
			if !strings.HasPrefix(e.RawPath(), "lib/covered/") {
				t.Errorf("still missing: %s", e.Path)
			}
		}
	})
}

func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
