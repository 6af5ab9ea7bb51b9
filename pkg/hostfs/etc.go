package hostfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"

	"go.uber.org/zap"
)

// EtcEntry is one path of an /etc preview.
type EtcEntry struct {
	// Path is relative to /etc, escaped (see Escape) when Escaped.
	Path    string   `json:"path"`
	Escaped bool     `json:"escaped,omitempty"`
	Class   EtcClass `json:"class"`
	// Local is what the host changed relative to the booted default; Image
	// is what the staged image changed relative to the booted default.
	Local []Change `json:"local,omitempty"`
	Image []Change `json:"image,omitempty"`
	// Outcome is what /etc will hold at Path after the merge.
	Outcome Outcome `json:"outcome"`
	// Old (booted default), New (staged default) and Live; nil when absent.
	Old  *Meta `json:"old,omitempty"`
	New  *Meta `json:"new,omitempty"`
	Live *Meta `json:"live,omitempty"`
	raw  string
}

// RawPath is the entry's path relative to /etc, unescaped.
func (e EtcEntry) RawPath() string { return e.raw }

// EtcReport is the /etc preview of one staged deployment.
type EtcReport struct {
	Booted  DeploymentRef `json:"booted"`
	Staged  DeploymentRef `json:"staged"`
	Entries []EtcEntry    `json:"entries"`
	// Counts per class; Unchanged counts paths neither side changed.
	Counts    map[EtcClass]int `json:"counts"`
	Unchanged int              `json:"unchanged"`
	// Special lists FIFOs, sockets and devices met (never read). libostree
	// refuses to merge a locally added or changed one.
	Special []string `json:"special,omitempty"`
	// Truncated is true when a limit stopped the walk; Limit says which.
	// Entries then cover only the part walked.
	Truncated    bool   `json:"truncated"`
	Limit        string `json:"limit,omitempty"`
	FilesVisited int64  `json:"filesVisited"`
	BytesRead    int64  `json:"bytesRead"`
}

// Conflicts returns the entries of class Conflict.
func (r *EtcReport) Conflicts() []EtcEntry {
	return r.filter(func(c EtcClass) bool { return c == Conflict })
}

// LocalEdits returns the entries `ostree admin config-diff` lists.
func (r *EtcReport) LocalEdits() []EtcEntry { return r.filter(EtcClass.LocalEdit) }

func (r *EtcReport) filter(keep func(EtcClass) bool) []EtcEntry {
	var out []EtcEntry
	for _, e := range r.Entries {
		if keep(e.Class) {
			out = append(out, e)
		}
	}
	return out
}

// errLimit stops a walk when the budget is exhausted.
var errLimit = errors.New("limit reached")

// PreviewEtc compares the booted deployment's usr/etc (old defaults), the
// staged deployment's usr/etc (new defaults) and the live /etc, and says
// per path what the 3-way merge at finalization will do.
func (h *Host) PreviewEtc(ctx context.Context, booted, staged DeploymentRef) (*EtcReport, error) {
	var roots [3]*os.Root
	defer func() {
		for _, r := range roots {
			if r != nil {
				r.Close()
			}
		}
	}()
	var err error
	if roots[0], err = h.openDeployment(booted, "usr/etc"); err != nil {
		return nil, fmt.Errorf("etc preview: booted: %w", err)
	}
	if roots[1], err = h.openDeployment(staged, "usr/etc"); err != nil {
		return nil, fmt.Errorf("etc preview: staged: %w", err)
	}
	if roots[2], err = openLive(h.etc); err != nil {
		return nil, fmt.Errorf("etc preview: %w", err)
	}
	w := &etcWalk{ctx: ctx, roots: roots, b: &budget{limits: h.limits},
		rep: &EtcReport{Booted: booted, Staged: staged, Entries: []EtcEntry{}, Counts: map[EtcClass]int{}}}
	in := [3]bool{roots[0] != nil, roots[1] != nil, true}
	if err := w.dir("", in); err != nil && !errors.Is(err, errLimit) {
		return nil, fmt.Errorf("etc preview %s → %s: %w", booted, staged, err)
	}
	rep := w.rep
	rep.Truncated, rep.Limit = w.b.exhausted(), w.b.hit
	rep.FilesVisited, rep.BytesRead = w.b.files, w.b.bytes
	sort.Slice(rep.Entries, func(i, j int) bool { return rep.Entries[i].raw < rep.Entries[j].raw })
	h.log.Info("etc preview",
		zap.Stringer("booted", booted), zap.Stringer("staged", staged),
		zap.Int("conflicts", rep.Counts[Conflict]), zap.Int("localEdits", len(rep.LocalEdits())),
		zap.Int("newDefaults", rep.Counts[NewDefaultApplies]),
		zap.Bool("truncated", rep.Truncated), zap.String("limit", rep.Limit))
	return rep, nil
}

type etcWalk struct {
	ctx   context.Context
	roots [3]*os.Root // booted usr/etc, staged usr/etc, live /etc
	b     *budget
	rep   *EtcReport
}

// dir walks the children of rel in the trees selected by in.
func (w *etcWalk) dir(rel string, in [3]bool) error {
	names, err := w.names(rel, in)
	if err != nil {
		return err
	}
	for _, name := range names {
		if err := w.ctx.Err(); err != nil {
			return err
		}
		p := join(rel, name)
		var m [3]*Meta
		for i := range in {
			if !in[i] {
				continue
			}
			mi, err := lstat(w.roots[i], p)
			if errors.Is(err, os.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			if !w.b.visit() {
				return errLimit
			}
			m[i] = mi
		}
		if err := w.hashEqualSizes(p, m); err != nil {
			return err
		}
		w.record(p, m)
		if sub, ok := recurse(m[0], m[1], m[2]); ok {
			if err := w.dir(p, sub); err != nil {
				return err
			}
		}
	}
	return nil
}

// names is the sorted union of rel's children in the selected trees.
func (w *etcWalk) names(rel string, in [3]bool) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for i := range in {
		if !in[i] {
			continue
		}
		dir := rel
		if dir == "" {
			dir = "."
		}
		ns, err := readDirNames(w.roots[i], dir)
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	sort.Strings(out)
	return out, nil
}

// hashEqualSizes reads the regular files whose content decides a diff: only
// those with the same size as another version of the path.
func (w *etcWalk) hashEqualSizes(p string, m [3]*Meta) error {
	for i := range m {
		for j := i + 1; j < len(m); j++ {
			a, b := m[i], m[j]
			if a == nil || b == nil || a.Kind != KindFile || b.Kind != KindFile || a.Size != b.Size {
				continue
			}
			for _, k := range []int{i, j} {
				ok, err := hash(w.roots[k], p, m[k], w.b)
				if err != nil {
					return err
				}
				if !ok {
					return errLimit
				}
			}
		}
	}
	return nil
}

func (w *etcWalk) record(p string, m [3]*Meta) {
	for _, mi := range m {
		if mi != nil && mi.Kind.Special() {
			w.rep.Special = append(w.rep.Special, Escape(p))
			break
		}
	}
	class, local, image := classify(m[0], m[1], m[2])
	if class == "" {
		w.rep.Unchanged++
		return
	}
	w.rep.Counts[class]++
	w.rep.Entries = append(w.rep.Entries, EtcEntry{
		Path: Escape(p), Escaped: NeedsEscape(p), Class: class,
		Local: local, Image: image, Outcome: outcome(class, m[1], m[2]), Old: m[0], New: m[1], Live: m[2], raw: p,
	})
}

// EtcDrift lists the live /etc's changes relative to the booted
// deployment's defaults (what `ostree admin config-diff` shows): a preview
// of the booted deployment against itself, so every entry is a local edit.
func (h *Host) EtcDrift(ctx context.Context, booted DeploymentRef) (*EtcReport, error) {
	return h.PreviewEtc(ctx, booted, booted)
}
