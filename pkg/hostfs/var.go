package hostfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"go.uber.org/zap"
)

// VarStatus says how the live /var stands to one path the image ships.
type VarStatus string

// Statuses of VarReport entries.
const (
	// VarMissing: the live /var lacks the path; CreateMissingVar creates it.
	VarMissing VarStatus = "missing"
	// VarCovered: missing, but a tmpfiles.d line of the staged image
	// creates it at boot.
	VarCovered VarStatus = "covered"
	// VarTypeDiffers: the live /var has the path with another type; what it
	// ships below is not looked at.
	VarTypeDiffers VarStatus = "type-differs"
	// VarDiffers: same type, other content (files) or target (symlinks);
	// never changed.
	VarDiffers VarStatus = "differs"
	// VarSpecial: the image ships a FIFO, socket or device there (never
	// read, never created).
	VarSpecial VarStatus = "special"
)

// VarEntry is one path of a /var preview.
type VarEntry struct {
	// Path is relative to /var, escaped (see Escape) when Escaped.
	Path      string    `json:"path"`
	Escaped   bool      `json:"escaped,omitempty"`
	Status    VarStatus `json:"status"`
	CoveredBy string    `json:"coveredBy,omitempty"` // tmpfiles.d file:line
	Shipped   *Meta     `json:"shipped"`
	Live      *Meta     `json:"live,omitempty"`
	raw       string
}

// RawPath is the entry's path relative to /var, unescaped.
func (e VarEntry) RawPath() string { return e.raw }

// VarReport lists what the staged image ships under /var that the live
// /var does not have as shipped.
type VarReport struct {
	Staged   DeploymentRef     `json:"staged"`
	Entries  []VarEntry        `json:"entries"`
	Counts   map[VarStatus]int `json:"counts"`
	Present  int               `json:"present"` // shipped paths the live /var has alike
	Tmpfiles []string          `json:"tmpfiles,omitempty"`
	// Truncated is true when a limit stopped the walk; Limit says which.
	Truncated    bool   `json:"truncated"`
	Limit        string `json:"limit,omitempty"`
	FilesVisited int64  `json:"filesVisited"`
	BytesRead    int64  `json:"bytesRead"`
}

// Missing returns the entries CreateMissingVar would create.
func (r *VarReport) Missing() []VarEntry {
	var out []VarEntry
	for _, e := range r.Entries {
		if e.Status == VarMissing {
			out = append(out, e)
		}
	}
	return out
}

// PreviewVar compares what the staged deployment ships under var/ with the
// live /var. libostree copies an image's /var only on first install, so
// everything reported here will not reach this host by itself.
func (h *Host) PreviewVar(ctx context.Context, staged DeploymentRef) (*VarReport, error) {
	shipped, err := h.openDeployment(staged, "var")
	if err != nil {
		return nil, fmt.Errorf("var preview: %w", err)
	}
	rep := &VarReport{Staged: staged, Entries: []VarEntry{}, Counts: map[VarStatus]int{}}
	if shipped == nil {
		return rep, nil
	}
	defer shipped.Close()
	usrLib, err := h.openDeployment(staged, "usr/lib")
	if err != nil {
		return nil, fmt.Errorf("var preview: %w", err)
	}
	if usrLib != nil {
		defer usrLib.Close()
	}
	live, err := openLive(h.vr)
	if err != nil {
		return nil, fmt.Errorf("var preview: %w", err)
	}
	defer live.Close()
	b := &budget{limits: h.limits}
	ix, files, err := loadTmpfiles(usrLib, b)
	if err != nil {
		return nil, fmt.Errorf("var preview %s: %w", staged, err)
	}
	rep.Tmpfiles = files
	w := &varWalk{ctx: ctx, shipped: shipped, live: live, b: b, ix: ix, rep: rep}
	if err := w.dir("", true); err != nil && !errors.Is(err, errLimit) {
		return nil, fmt.Errorf("var preview %s: %w", staged, err)
	}
	rep.Truncated, rep.Limit = b.exhausted(), b.hit
	rep.FilesVisited, rep.BytesRead = b.files, b.bytes
	sort.Slice(rep.Entries, func(i, j int) bool { return rep.Entries[i].raw < rep.Entries[j].raw })
	h.log.Info("var preview", zap.Stringer("staged", staged),
		zap.Int("missing", rep.Counts[VarMissing]), zap.Int("covered", rep.Counts[VarCovered]),
		zap.Int("differs", rep.Counts[VarDiffers]+rep.Counts[VarTypeDiffers]),
		zap.Bool("truncated", rep.Truncated), zap.String("limit", rep.Limit))
	return rep, nil
}

type varWalk struct {
	ctx           context.Context
	shipped, live *os.Root
	b             *budget
	ix            *tmpfilesIndex
	rep           *VarReport
}

// dir walks rel of the shipped tree; liveDir says whether the live /var has
// rel as a directory (otherwise nothing below it is looked up there).
func (w *varWalk) dir(rel string, liveDir bool) error {
	d := rel
	if d == "" {
		d = "."
	}
	names, err := readDirNames(w.shipped, d)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		p := join(rel, name)
		if !w.b.visit() {
			return errLimit
		}
		s, err := lstat(w.shipped, p)
		if err != nil {
			return err
		}
		var l *Meta
		if liveDir {
			if l, err = lstat(w.live, p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return err
			}
		}
		status, err := w.status(p, s, l)
		if err != nil {
			return err
		}
		if status == "" {
			w.rep.Present++
		} else {
			e := VarEntry{Path: Escape(p), Escaped: NeedsEscape(p), Status: status, Shipped: s, Live: l, raw: p}
			if status == VarCovered {
				e.CoveredBy, _ = w.ix.covers(p)
			}
			w.rep.Counts[status]++
			w.rep.Entries = append(w.rep.Entries, e)
		}
		if s.Kind == KindDir && (l == nil || l.Kind == KindDir) {
			if err := w.dir(p, l != nil); err != nil {
				return err
			}
		}
	}
	return nil
}

// status decides one path; "" means the live /var has it alike.
func (w *varWalk) status(p string, s, l *Meta) (VarStatus, error) {
	switch {
	case s.Kind.Special():
		return VarSpecial, nil
	case l == nil:
		if _, ok := w.ix.covers(p); ok {
			return VarCovered, nil
		}
		return VarMissing, nil
	case s.Kind != l.Kind:
		return VarTypeDiffers, nil
	case s.Kind == KindSymlink && s.target != l.target:
		return VarDiffers, nil
	case s.Kind == KindFile:
		if s.Size != l.Size {
			return VarDiffers, nil
		}
		for _, side := range []struct {
			r *os.Root
			m *Meta
		}{{w.shipped, s}, {w.live, l}} {
			ok, err := hash(side.r, p, side.m, w.b)
			if err != nil {
				return "", err
			}
			if !ok {
				return "", errLimit
			}
		}
		if s.SHA256 != l.SHA256 {
			return VarDiffers, nil
		}
	}
	return "", nil
}
