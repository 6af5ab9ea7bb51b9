package nspawn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"layerd.dev/layerd/test/ostreesys"
)

// BaseRef is the ref of the bootable base commit, in the cached repo and in every sysroot
// prepared from it.
const BaseRef = "nspawn/base"

// Base is the cached bootable base: the debootstrap rootfs converted to an ostree tree and
// committed to a bare repo (committing 150 MB takes seconds; pulling it into a sysroot on
// the same filesystem hardlinks the objects).
type Base struct {
	Rootfs   *Rootfs
	Repo     string // bare ostree repo holding BaseRef
	Checksum string // commit of BaseRef
}

// EnsureBase returns the cached base, building the rootfs (EnsureRootfs) and the commit
// when missing.
func EnsureBase(ctx context.Context, o RootfsOptions) (*Base, error) {
	rootfs, err := EnsureRootfs(ctx, o)
	if err != nil {
		return nil, err
	}
	key, err := treeKey(rootfs.Key)
	if err != nil {
		return nil, err
	}
	entry, err := cached(filepath.Dir(rootfs.Dir), "ostree-"+key, func(tmp string) error {
		return commitBase(ctx, rootfs.Dir, tmp)
	})
	if err != nil {
		return nil, fmt.Errorf("nspawn: committing the base tree: %w", err)
	}
	repo := filepath.Join(entry, "repo")
	sum, err := ostreeCLI(ctx, "rev-parse", "--repo="+repo, BaseRef)
	if err != nil {
		return nil, fmt.Errorf("nspawn: reading the base commit: %w", err)
	}
	return &Base{Rootfs: rootfs, Repo: repo, Checksum: strings.TrimSpace(sum)}, nil
}

// commitBase converts rootfs into tmp/tree, commits it to the bare repo tmp/repo as BaseRef
// and drops the tree.
func commitBase(ctx context.Context, rootfs, tmp string) error {
	tree := filepath.Join(tmp, "tree")
	if err := BuildTree(rootfs, tree); err != nil {
		return err
	}
	repo := filepath.Join(tmp, "repo")
	if _, err := ostreeCLI(ctx, "init", "--mode=bare", "--repo="+repo); err != nil {
		return err
	}
	if _, err := ostreeCLI(ctx, "commit", "--repo="+repo, "--branch="+BaseRef, "--subject=nspawn base",
		"--add-metadata-string=version=base", "--tree=dir="+tree); err != nil {
		return err
	}
	if err := os.RemoveAll(tree); err != nil {
		return fmt.Errorf("removing the converted tree: %w", err)
	}
	return nil
}

// PrepareSysroot creates an ostree sysroot at path with stateroot osname whose single
// deployment is the base commit (ref BaseRef), with /var/log/journal in the stateroot /var so
// journals persist across reboots. On failure nothing is left at path.
func PrepareSysroot(ctx context.Context, base *Base, path, osname string) (_ *ostreesys.Sysroot, _ ostreesys.Deployment, err error) {
	sys, err := ostreesys.Init(ctx, path, osname)
	if err != nil {
		return nil, ostreesys.Deployment{}, fmt.Errorf("nspawn: prepare sysroot: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, sys.Remove())
		}
	}()
	if _, err := ostreeCLI(ctx, "pull-local", "--repo="+sys.RepoPath(), base.Repo, BaseRef); err != nil {
		return nil, ostreesys.Deployment{}, fmt.Errorf("nspawn: prepare sysroot: %w", err)
	}
	dep, err := sys.Deploy(ctx, BaseRef, ostreesys.DeployOptions{})
	if err != nil {
		return nil, ostreesys.Deployment{}, fmt.Errorf("nspawn: prepare sysroot: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(sys.StaterootVar(), "log", "journal"), 0o755); err != nil {
		return nil, ostreesys.Deployment{}, fmt.Errorf("nspawn: prepare sysroot: %w", err)
	}
	return sys, dep, nil
}

// CommitOverlay commits parent (a ref or checksum of sys's repo) with the directory overlay
// laid over it (its files replace the parent's) to branch, and returns the checksum. Only the
// overlay is read, so a variant of the 150 MB base commits in well under a second.
func CommitOverlay(ctx context.Context, sys *ostreesys.Sysroot, parent, overlay, branch string, meta map[string]string) (string, error) {
	args := []string{"commit", "--repo=" + sys.RepoPath(), "--branch=" + branch, "--subject=" + branch,
		"--tree=ref=" + parent, "--tree=dir=" + overlay}
	for k, v := range meta {
		args = append(args, "--add-metadata-string="+k+"="+v)
	}
	out, err := ostreeCLI(ctx, args...)
	if err != nil {
		return "", fmt.Errorf("nspawn: commit overlay: %w", err)
	}
	return strings.TrimSpace(out), nil
}

// ostreeCLI runs the host's ostree and returns stdout; the error carries stderr.
func ostreeCLI(ctx context.Context, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "ostree", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("ostree %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.String(), nil
}
