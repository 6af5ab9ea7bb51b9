package hostfs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/test/ostreesys"
)

// node is a real libostree sysroot with v1 deployed and booted, and a host
// root laid out like the DaemonSet's /host: sysroot, etc and var.
type node struct {
	s        *ostreesys.Sysroot
	booted   ostreesys.Deployment
	runDir   string
	hostRoot string
}

func ref(d ostreesys.Deployment) hostfs.DeploymentRef {
	return hostfs.DeploymentRef{OSName: d.OSName, Checksum: d.Checksum, Serial: d.Serial}
}

// newNode deploys a tree prepared by build1 and boots it.
func newNode(t *testing.T, build1 func(tree string)) (*node, context.Context) {
	t.Helper()
	if err := ostreesys.Prerequisites(); err != nil {
		t.Fatalf("real sysroot tests need root and the Debian ostree tools: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	dir := t.TempDir()
	s, err := ostreesys.Init(ctx, filepath.Join(dir, "sysroot"), "tos")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Remove(); err != nil {
			t.Errorf("remove sysroot: %v", err)
		}
	})
	n := &node{s: s, runDir: filepath.Join(dir, "run"), hostRoot: filepath.Join(dir, "host")}
	s.RunDir = n.runDir
	c1 := n.commit(t, ctx, "1", build1)
	if n.booted, err = s.Deploy(ctx, c1, ostreesys.DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(n.hostRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{
		"sysroot": s.Path, "etc": filepath.Join(n.booted.Path, "etc"), "var": s.StaterootVar(),
	} {
		if err := os.Symlink(target, filepath.Join(n.hostRoot, name)); err != nil {
			t.Fatal(err)
		}
	}
	return n, ctx
}

func (n *node) commit(t *testing.T, ctx context.Context, version string, build func(tree string)) string {
	t.Helper()
	tree := filepath.Join(t.TempDir(), "tree")
	if err := ostreesys.BuildTree(tree, ostreesys.TreeOptions{Version: version}); err != nil {
		t.Fatal(err)
	}
	build(tree)
	c, err := n.s.CommitTree(ctx, tree, "tos/stable", map[string]string{ostreesys.MetaVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// stage commits v2 and stages it from the booted deployment, like rpm-ostree.
func (n *node) stage(t *testing.T, ctx context.Context, build2 func(tree string)) ostreesys.Deployment {
	t.Helper()
	c2 := n.commit(t, ctx, "2", build2)
	if _, err := n.s.ExecBooted(ctx, n.booted.Path, n.runDir, "ostree", "admin", "deploy", "--stage", c2); err != nil {
		t.Fatal(err)
	}
	ds, err := n.s.Deployments()
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) == 0 || !ds[0].Staged || ds[0].Checksum != c2 {
		t.Fatalf("deployments after staging: %+v", ds)
	}
	return ds[0]
}

func (n *node) host(t *testing.T, limits hostfs.Limits) *hostfs.Host {
	t.Helper()
	h, err := hostfs.New(hostfs.Options{HostRoot: n.hostRoot, Limits: limits, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// write creates root/rel with content and mode (parents 0755).
func write(t *testing.T, root, rel, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// fileState is what a comparison of trees looks at.
type fileState struct {
	kind     string
	mode     fs.FileMode
	uid, gid uint32
	content  string // sha256 of a file, target of a symlink
}

// snapshot walks root without following symlinks.
func snapshot(t *testing.T, root string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		fsx := fileState{mode: fi.Mode(), uid: st.Uid, gid: st.Gid}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			fsx.kind, fsx.content = "file", hex.EncodeToString(sum[:])
		case fi.IsDir():
			fsx.kind = "dir"
		case fi.Mode()&fs.ModeSymlink != 0:
			tgt, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fsx.kind, fsx.content = "symlink", tgt
		default:
			fsx.kind = "special"
		}
		out[rel] = fsx
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
