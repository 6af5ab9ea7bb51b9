package hostfs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"regexp"
	"syscall"

	"go.uber.org/zap"
)

// BackupDir is where ImageWins keeps the local versions of conflicting /etc
// files, relative to /var: <BackupDir>/<digest>/{manifest.json,files/…}.
const BackupDir = "lib/layerd/etc-backup"

// BackupFile is one local /etc file set aside by EtcBackupAndApply.
type BackupFile struct {
	Path    string            `json:"path"` // relative to /etc, escaped when Escaped
	Escaped bool              `json:"escaped,omitempty"`
	Raw     []byte            `json:"raw"` // the path's bytes
	Kind    Kind              `json:"kind"`
	Mode    uint32            `json:"mode"`
	UID     uint32            `json:"uid"`
	GID     uint32            `json:"gid"`
	Target  []byte            `json:"target,omitempty"` // symlink target bytes
	SHA256  string            `json:"sha256,omitempty"`
	Xattrs  map[string][]byte `json:"xattrs,omitempty"` // regular files
	// Default is what /etc got instead: "booted-default" or "removed"
	// (the booted image had no default; the staged one's applies).
	Default string `json:"default"`
}

// EtcBackup is the manifest of one ImageWins application.
type EtcBackup struct {
	Digest string        `json:"digest"`
	Dir    string        `json:"dir"` // relative to /var
	Booted DeploymentRef `json:"booted"`
	Staged DeploymentRef `json:"staged"`
	Files  []BackupFile  `json:"files"`
	// Kept lists files RestoreEtc left alone: edited after the backup.
	Kept []string `json:"kept,omitempty"`
}

var digestRE = regexp.MustCompile(`^[a-z0-9]+:[0-9a-f]{32,128}$`)

// EtcBackupAndApply implements etcPolicy ImageWins, right before finalize:
// each conflicting local file or symlink of rep is copied with owner, mode
// and xattrs under /var/<BackupDir>/<digest>/, then the booted default is
// put back in /etc so the 3-way merge takes the staged default. A second
// call for the same digest re-applies the recorded backup (idempotent);
// RestoreEtc undoes it. Conflicting directories and special files are left
// alone.
func (h *Host) EtcBackupAndApply(ctx context.Context, rep *EtcReport, digest string) (*EtcBackup, error) {
	if !digestRE.MatchString(digest) {
		return nil, fmt.Errorf("etc backup: invalid digest %q", digest)
	}
	roots, err := h.openBackupRoots(&rep.Booted)
	if err != nil {
		return nil, fmt.Errorf("etc backup %s: %w", digest, err)
	}
	defer roots.close()
	dir := BackupDir + "/" + digest
	b, err := loadManifest(roots.vr, dir)
	if errors.Is(err, os.ErrNotExist) {
		b, err = roots.backup(ctx, rep, digest, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("etc backup %s: %w", digest, err)
	}
	for i := range b.Files {
		if err := ctx.Err(); err != nil {
			return b, fmt.Errorf("etc backup %s: %w", digest, err)
		}
		if err := roots.putDefault(&b.Files[i]); err != nil {
			return b, fmt.Errorf("etc backup %s: %w", digest, err)
		}
		h.log.Info("etc: booted default restored so the new default applies",
			zap.String("path", b.Files[i].Path), zap.String("digest", digest), zap.String("backup", dir))
	}
	return b, nil
}

// ErrEditedSinceBackup: a conflicting /etc file is neither the backed-up
// local version nor the booted default any more; it is left alone.
var ErrEditedSinceBackup = errors.New("edited since the backup")

// RestoreEtc puts the local files recorded for digest back in /etc (a
// failed finalize or a cancelled update). The backup is then renamed to
// <digest>.restored.<unix-nanos> (kept), so a later EtcBackupAndApply for the
// same digest backs up the files as they are then.
func (h *Host) RestoreEtc(ctx context.Context, digest string) (*EtcBackup, error) {
	if !digestRE.MatchString(digest) {
		return nil, fmt.Errorf("etc restore: invalid digest %q", digest)
	}
	roots, err := h.openBackupRoots(nil)
	if err != nil {
		return nil, fmt.Errorf("etc restore %s: %w", digest, err)
	}
	defer roots.close()
	dir := BackupDir + "/" + digest
	b, err := loadManifest(roots.vr, dir)
	if err != nil {
		return nil, fmt.Errorf("etc restore %s: %w", digest, err)
	}
	if roots.old, err = h.openDeployment(b.Booted, "usr/etc"); err != nil {
		return nil, fmt.Errorf("etc restore %s: %w", digest, err)
	}
	for _, f := range b.Files {
		if err := ctx.Err(); err != nil {
			return b, fmt.Errorf("etc restore %s: %w", digest, err)
		}
		state, err := roots.liveState(&f)
		if err != nil {
			return b, fmt.Errorf("etc restore %s: %w", digest, err)
		}
		if state == "other" {
			b.Kept = append(b.Kept, f.Path)
			h.log.Warn("etc: file edited after the backup, not restored",
				zap.String("path", f.Path), zap.String("digest", digest))
			continue
		}
		src := dir + "/files/" + string(f.Raw)
		if err := roots.place(roots.vr, src, &f, f.Kind, string(f.Target), f.UID, f.GID, f.Mode); err != nil {
			return b, fmt.Errorf("etc restore %s: %s: %w", digest, f.Path, err)
		}
		h.log.Info("etc: local file restored", zap.String("path", f.Path), zap.String("digest", digest))
	}
	done := fmt.Sprintf("%s.restored.%d", dir, h.now().UnixNano())
	if err := roots.vr.Rename(dir, done); err != nil {
		return b, fmt.Errorf("etc restore %s: retiring the backup: %w", digest, err)
	}
	b.Dir = done
	return b, nil
}

// EtcBackups returns the manifests of the ImageWins backups that were not
// restored (<BackupDir>/<digest>/manifest.json), sorted by digest. A
// backup is active from EtcBackupAndApply until RestoreEtc retires it; one
// whose digest was booted stays as the record of the local versions. A
// directory without a manifest (a backup interrupted before /etc was
// touched) is skipped; no backup directory is none.
func (h *Host) EtcBackups() ([]*EtcBackup, error) {
	vr, err := openLive(h.vr)
	if err != nil {
		return nil, fmt.Errorf("etc backups: %w", err)
	}
	defer vr.Close()
	names, err := readDirNames(vr, BackupDir)
	if err != nil {
		return nil, fmt.Errorf("etc backups: %w", err)
	}
	var out []*EtcBackup
	for _, name := range names {
		if !digestRE.MatchString(name) {
			continue // <digest>.restored.<nanos>, temporary files
		}
		b, err := loadManifest(vr, BackupDir+"/"+name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("etc backups: %w", err)
		}
		out = append(out, b)
	}
	return out, nil
}

type backupRoots struct{ etc, vr, old *os.Root }

func (h *Host) openBackupRoots(booted *DeploymentRef) (*backupRoots, error) {
	r := &backupRoots{}
	var err error
	if r.etc, err = openLive(h.etc); err != nil {
		return nil, err
	}
	if r.vr, err = openLive(h.vr); err != nil {
		r.close()
		return nil, err
	}
	if booted != nil {
		if r.old, err = h.openDeployment(*booted, "usr/etc"); err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

func (r *backupRoots) close() {
	for _, x := range []*os.Root{r.etc, r.vr, r.old} {
		if x != nil {
			x.Close()
		}
	}
}

// backup copies the conflicting local files and writes the manifest last.
func (r *backupRoots) backup(ctx context.Context, rep *EtcReport, digest, dir string) (*EtcBackup, error) {
	b := &EtcBackup{Digest: digest, Dir: dir, Booted: rep.Booted, Staged: rep.Staged}
	if err := r.vr.MkdirAll(dir+"/files", 0o700); err != nil {
		return nil, fmt.Errorf("creating backup dir: %w", err)
	}
	for _, e := range rep.Conflicts() {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		m, err := lstat(r.etc, e.raw)
		if err != nil {
			return nil, fmt.Errorf("backing up %s: %w", e.Path, err)
		}
		if m.Kind != KindFile && m.Kind != KindSymlink {
			continue
		}
		f := BackupFile{Path: e.Path, Escaped: e.Escaped, Raw: []byte(e.raw), Kind: m.Kind,
			Mode: m.Mode, UID: m.UID, GID: m.GID, Target: []byte(m.target), Default: "removed"}
		if r.old != nil {
			if om, err := lstat(r.old, e.raw); err == nil && (om.Kind == KindFile || om.Kind == KindSymlink) {
				f.Default = "booted-default"
			}
		}
		if m.Kind == KindFile {
			if err := r.copyOut(e.raw, dir+"/files/"+e.raw, &f); err != nil {
				return nil, fmt.Errorf("backing up %s: %w", e.Path, err)
			}
		}
		b.Files = append(b.Files, f)
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeAtomic(r.vr, dir+"/manifest.json", data); err != nil {
		return nil, fmt.Errorf("writing manifest: %w", err)
	}
	return b, nil
}

// copyOut copies live /etc/p to the backup file dst, recording xattrs.
func (r *backupRoots) copyOut(p, dst string, f *BackupFile) error {
	src, err := openRegular(r.etc, p)
	if err != nil {
		return err
	}
	defer src.Close()
	if f.Xattrs, err = getXattrs(int(src.Fd())); err != nil {
		return err
	}
	if err := r.vr.MkdirAll(path.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := r.vr.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	sum, err := copyHashed(out, src)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	f.SHA256 = sum
	return err
}

// putDefault replaces /etc/<f> by the booted default (or removes it).
func (r *backupRoots) putDefault(f *BackupFile) error {
	p := string(f.Raw)
	state, err := r.liveState(f)
	if err != nil {
		return err
	}
	switch state {
	case "default":
		return nil // applied by an earlier call
	case "other":
		return fmt.Errorf("%s: %w", f.Path, ErrEditedSinceBackup)
	}
	if f.Default == "removed" {
		if err := r.etc.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("removing %s: %w", f.Path, err)
		}
		return nil
	}
	om, err := lstat(r.old, p)
	if err != nil {
		return fmt.Errorf("booted default of %s: %w", f.Path, err)
	}
	if err := r.place(r.old, p, f, om.Kind, om.target, om.UID, om.GID, om.Mode); err != nil {
		return fmt.Errorf("putting back the booted default of %s: %w", f.Path, err)
	}
	return nil
}

// place writes /etc/<f.Raw> as a symlink to target, or as a copy of the
// regular file src in from, with owner and mode and f's xattrs, through a
// temporary name and a rename.
func (r *backupRoots) place(from *os.Root, src string, f *BackupFile, kind Kind, target string, uid, gid, mode uint32) error {
	p := string(f.Raw)
	tmp := path.Join(path.Dir(p), ".layerd-tmp-"+path.Base(p))
	if err := r.etc.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing stale %s: %w", Escape(tmp), err)
	}
	switch kind {
	case KindSymlink:
		if err := r.etc.Symlink(target, tmp); err != nil {
			return err
		}
	case KindFile:
		in, err := openRegular(from, src)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := r.etc.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(out, in)
		if err == nil {
			err = setXattrs(int(out.Fd()), f.Xattrs)
		}
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = r.etc.Chmod(tmp, modeOf(mode))
		}
		if err != nil {
			_ = r.etc.Remove(tmp)
			return err
		}
	default:
		return fmt.Errorf("%s is a %s", Escape(src), kind)
	}
	if err := r.etc.Lchown(tmp, int(uid), int(gid)); err != nil {
		_ = r.etc.Remove(tmp)
		return err
	}
	if kind == KindFile {
		// chown clears setuid/setgid: set the mode again.
		if err := r.etc.Chmod(tmp, modeOf(mode)); err != nil {
			_ = r.etc.Remove(tmp)
			return err
		}
	}
	return r.etc.Rename(tmp, p)
}

func loadManifest(vr *os.Root, dir string) (*EtcBackup, error) {
	data, err := vr.ReadFile(dir + "/manifest.json")
	if err != nil {
		return nil, err
	}
	var b EtcBackup
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", dir, err)
	}
	return &b, nil
}

// liveState says whether /etc/<f> is still the backed-up local version
// ("backup"), already the booted default or gone as planned ("default"),
// or something else ("other").
func (r *backupRoots) liveState(f *BackupFile) (string, error) {
	p := string(f.Raw)
	lm, err := lstat(r.etc, p)
	if errors.Is(err, os.ErrNotExist) {
		if f.Default == "removed" {
			return "default", nil
		}
		return "other", nil
	}
	if err != nil {
		return "", err
	}
	unlimited := &budget{limits: Limits{MaxFiles: math.MaxInt64, MaxBytes: math.MaxInt64}}
	if _, err := hash(r.etc, p, lm, unlimited); err != nil {
		return "", err
	}
	if lm.Kind == f.Kind && lm.Mode == f.Mode && lm.UID == f.UID && lm.GID == f.GID &&
		lm.SHA256 == f.SHA256 && lm.target == string(f.Target) {
		return "backup", nil
	}
	if f.Default == "booted-default" {
		om, err := lstat(r.old, p)
		if err != nil {
			return "", fmt.Errorf("booted default of %s: %w", f.Path, err)
		}
		if _, err := hash(r.old, p, om, unlimited); err != nil {
			return "", err
		}
		if diffMeta(om, lm) == nil {
			return "default", nil
		}
	}
	return "other", nil
}
