package ostreesys

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Commit metadata keys written by CommitTree callers (ostree-ext names).
const (
	MetaVersion        = "version"
	MetaManifestDigest = "ostree.manifest-digest"
)

// CommitTree commits the directory treeDir to branch in the sysroot repo and
// returns the commit checksum. meta becomes string commit metadata
// (--add-metadata-string); put the image version under MetaVersion and the
// manifest digest under MetaManifestDigest.
func (s *Sysroot) CommitTree(ctx context.Context, treeDir, branch string, meta map[string]string) (string, error) {
	if branch == "" {
		return "", fmt.Errorf("ostreesys: commit %s: empty branch", treeDir)
	}
	abs, err := filepath.Abs(treeDir)
	if err != nil {
		return "", fmt.Errorf("ostreesys: commit: %w", err)
	}
	subject := branch
	if v := meta[MetaVersion]; v != "" {
		subject = branch + " " + v
	}
	args := []string{"commit", "--repo=" + s.RepoPath(), "--branch=" + branch,
		"--subject=" + subject, "--tree=dir=" + abs}
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		args = append(args, "--add-metadata-string="+k+"="+meta[k])
	}
	out, err := run(ctx, "ostree", args...)
	if err != nil {
		return "", err
	}
	csum := strings.TrimSpace(string(out))
	if !isChecksum(csum) {
		return "", fmt.Errorf("ostreesys: commit %s: unexpected output %q", treeDir, out)
	}
	return csum, nil
}

// RevParse resolves a ref (or checksum) in the sysroot repo.
func (s *Sysroot) RevParse(ctx context.Context, ref string) (string, error) {
	out, err := run(ctx, "ostree", "rev-parse", "--repo="+s.RepoPath(), ref)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(out)), nil
}

// DeployOptions tunes Deploy.
type DeployOptions struct {
	Kargs       []string // --karg=NAME=VALUE (override earlier args of the same name)
	KargsAppend []string // --karg-append=NAME=VALUE
	KargsNone   bool     // --karg-none: do not import kernel arguments
	// Origin, when non-nil, is written to a temporary file and passed as
	// --origin-file. Otherwise OriginFile is used when set; otherwise ostree
	// records `refspec=<refOrChecksum>`.
	Origin     *Origin
	OriginFile string
	NoMerge    bool // --no-merge: ignore the merge deployment's /etc and kargs
	Retain     bool // --retain: keep all previous deployments
}

// Deploy runs a non-staged `ostree admin deploy` of refOrChecksum into the
// stateroot and returns the new default deployment (read back from disk).
func (s *Sysroot) Deploy(ctx context.Context, refOrChecksum string, opts DeployOptions) (Deployment, error) {
	args := []string{"admin", "deploy", "--sysroot=" + s.Path, "--os=" + s.OSName}
	for _, k := range opts.Kargs {
		args = append(args, "--karg="+k)
	}
	for _, k := range opts.KargsAppend {
		args = append(args, "--karg-append="+k)
	}
	if opts.KargsNone {
		args = append(args, "--karg-none")
	}
	if opts.NoMerge {
		args = append(args, "--no-merge")
	}
	if opts.Retain {
		args = append(args, "--retain")
	}
	originFile := opts.OriginFile
	if opts.Origin != nil {
		f, err := os.CreateTemp("", "ostreesys-origin-*")
		if err != nil {
			return Deployment{}, fmt.Errorf("ostreesys: deploy: origin temp file: %w", err)
		}
		originFile = f.Name()
		defer os.Remove(originFile)
		_, werr := f.Write(opts.Origin.Marshal())
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return Deployment{}, fmt.Errorf("ostreesys: deploy: write origin: %w", werr)
		}
	}
	if originFile != "" {
		args = append(args, "--origin-file="+originFile)
	}
	args = append(args, refOrChecksum)
	if _, err := run(ctx, "ostree", args...); err != nil {
		return Deployment{}, err
	}
	ds, err := s.Deployments()
	if err != nil {
		return Deployment{}, fmt.Errorf("ostreesys: deploy %s: read back: %w", refOrChecksum, err)
	}
	for _, d := range ds {
		if !d.Staged {
			return d, nil
		}
	}
	return Deployment{}, fmt.Errorf("ostreesys: deploy %s: no deployment on disk afterwards", refOrChecksum)
}

// Pin pins (or unpins) the deployment at boot index (`ostree admin pin`).
func (s *Sysroot) Pin(ctx context.Context, index int, pinned bool) error {
	args := []string{"admin", "pin", "--sysroot=" + s.Path}
	if !pinned {
		args = append(args, "--unpin")
	}
	_, err := run(ctx, "ostree", append(args, fmt.Sprint(index))...)
	return err
}

// Undeploy removes the deployment at boot index (`ostree admin undeploy`).
func (s *Sysroot) Undeploy(ctx context.Context, index int) error {
	_, err := run(ctx, "ostree", "admin", "undeploy", "--sysroot="+s.Path, fmt.Sprint(index))
	return err
}

// WriteOrigin replaces the origin file of deployment d
// (<deploydir>.origin), e.g. to record a container image reference.
func (s *Sysroot) WriteOrigin(d Deployment, o Origin) error {
	path := s.DeploymentDir(d) + ".origin"
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, o.Marshal(), 0o644); err != nil {
		return fmt.Errorf("ostreesys: write origin: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("ostreesys: write origin: %w", err)
	}
	return nil
}

func isChecksum(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
