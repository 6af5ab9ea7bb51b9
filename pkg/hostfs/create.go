package hostfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"syscall"

	"go.uber.org/zap"
)

// VarAction is what CreateMissingVar did with one path.
type VarAction string

// Actions.
const (
	// Created: the path was missing and is now there as shipped.
	Created VarAction = "created"
	// LeftUntouched: the live /var has the path (already, or differently);
	// it was not changed.
	LeftUntouched VarAction = "left-untouched"
	// Skipped: covered by tmpfiles.d, a special file, or below a path that
	// could not be created.
	Skipped VarAction = "skipped"
	// Failed: creating the path failed (Error says why).
	Failed VarAction = "failed"
)

// VarResult is the outcome for one path of a VarReport.
type VarResult struct {
	Path    string    `json:"path"`
	Escaped bool      `json:"escaped,omitempty"`
	Action  VarAction `json:"action"`
	Status  VarStatus `json:"status"` // from the preview
	Error   string    `json:"error,omitempty"`
}

// CreateMissingVar creates in the live /var what rep found missing:
// directories (mode, owner), regular files (content copied, mode, owner)
// and symlinks (target, owner), copied from the staged deployment rep was
// made from. It never overwrites or deletes: a path that exists by now is
// left untouched, and so is every entry the preview found different.
// It returns one result per entry of rep; the error is for failures to
// start at all (sysroot or /var not readable, cancelled context).
func (h *Host) CreateMissingVar(ctx context.Context, rep *VarReport) ([]VarResult, error) {
	shipped, err := h.openDeployment(rep.Staged, "var")
	if err != nil {
		return nil, fmt.Errorf("create missing var: %w", err)
	}
	if shipped == nil {
		return nil, fmt.Errorf("create missing var: deployment %s ships no var/", rep.Staged)
	}
	defer shipped.Close()
	live, err := openLive(h.vr)
	if err != nil {
		return nil, fmt.Errorf("create missing var: %w", err)
	}
	defer live.Close()
	b := &budget{limits: h.limits}
	failed := map[string]bool{} // paths not created; their children are skipped
	var out []VarResult
	for _, e := range rep.Entries {
		if err := ctx.Err(); err != nil {
			return out, fmt.Errorf("create missing var: %w", err)
		}
		r := VarResult{Path: e.Path, Escaped: e.Escaped, Status: e.Status}
		switch {
		case e.Status == VarMissing && failed[path.Dir(e.raw)]:
			r.Action, r.Error = Skipped, "parent not created"
		case e.Status == VarMissing:
			r.Action, err = createOne(shipped, live, e, b)
			if err != nil {
				r.Error = err.Error()
			}
		case e.Status == VarDiffers || e.Status == VarTypeDiffers:
			r.Action = LeftUntouched
		default:
			r.Action = Skipped
		}
		if r.Action == Failed || r.Action == Skipped {
			failed[e.raw] = true
		}
		h.log.Info("var path", zap.String("path", r.Path), zap.String("action", string(r.Action)),
			zap.String("status", string(r.Status)), zap.String("error", r.Error))
		out = append(out, r)
	}
	return out, nil
}

// createOne creates one missing path exclusively (O_EXCL, mkdir, symlink:
// all fail on an existing path, which is then left untouched).
func createOne(shipped, live *os.Root, e VarEntry, b *budget) (VarAction, error) {
	s, err := lstat(shipped, e.raw)
	if err != nil {
		return Failed, fmt.Errorf("reading shipped %s: %w", e.Path, err)
	}
	if s.Kind != e.Shipped.Kind {
		return Failed, fmt.Errorf("shipped %s changed type since the preview", e.Path)
	}
	switch s.Kind {
	case KindDir:
		err = live.Mkdir(e.raw, 0o700)
	case KindSymlink:
		err = live.Symlink(s.target, e.raw)
	case KindFile:
		err = copyFile(shipped, live, e.raw, s, b)
	default:
		return Skipped, nil
	}
	if errors.Is(err, fs.ErrExist) {
		return LeftUntouched, nil
	}
	if err != nil {
		return Failed, fmt.Errorf("creating %s: %w", e.Path, err)
	}
	if err := live.Lchown(e.raw, int(s.UID), int(s.GID)); err != nil {
		return Failed, fmt.Errorf("chown %s: %w", e.Path, err)
	}
	if s.Kind != KindSymlink {
		if err := live.Chmod(e.raw, modeOf(s.Mode)); err != nil {
			return Failed, fmt.Errorf("chmod %s: %w", e.Path, err)
		}
		// After chown, which drops security.capability.
		if err := copyXattrs(shipped, live, e.raw, s.Kind); err != nil {
			return Created, fmt.Errorf("created, but xattrs of %s: %w", e.Path, err)
		}
	}
	return Created, nil
}

// copyXattrs copies the extended attributes (SELinux label, capabilities,
// user.*) of a shipped file or directory to the one just created.
func copyXattrs(shipped, live *os.Root, p string, kind Kind) error {
	open := func(r *os.Root) (*os.File, error) {
		if kind == KindDir {
			return r.OpenFile(p, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
		}
		return openRegular(r, p)
	}
	src, err := open(shipped)
	if err != nil {
		return err
	}
	defer src.Close()
	attrs, err := getXattrs(int(src.Fd()))
	if err != nil || len(attrs) == 0 {
		return err
	}
	dst, err := open(live)
	if err != nil {
		return err
	}
	defer dst.Close()
	return setXattrs(int(dst.Fd()), attrs)
}

// copyFile copies a shipped regular file to a new live file.
func copyFile(shipped, live *os.Root, p string, s *Meta, b *budget) error {
	if !b.read(s.Size) {
		return fmt.Errorf("byte limit: %s", b.hit)
	}
	src, err := openRegular(shipped, p)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := live.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, werr := io.Copy(dst, io.LimitReader(src, s.Size))
	if cerr := dst.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		// The file is ours (O_EXCL): do not leave a partial copy behind.
		if rerr := live.Remove(p); rerr != nil {
			return fmt.Errorf("copying: %w (removing the partial copy: %v)", werr, rerr)
		}
		return fmt.Errorf("copying: %w", werr)
	}
	return nil
}

// modeOf turns Meta.Mode bits into an os.FileMode for Chmod.
func modeOf(m uint32) os.FileMode {
	mode := os.FileMode(m & 0o777)
	if m&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if m&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if m&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}
