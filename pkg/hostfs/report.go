package hostfs

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// ReportVersion is the schema version of Report (docs/hostfs.md).
const ReportVersion = 1

// MaxSummaryPaths is how many paths a Summary lists per kind.
const MaxSummaryPaths = 10

// Report is the structured preview the agent writes to
// /run/layerd/report.json; docs/hostfs.md documents the schema.
type Report struct {
	Version     int         `json:"version"`
	GeneratedAt time.Time   `json:"generatedAt"`
	Summary     Summary     `json:"summary"`
	Etc         *EtcReport  `json:"etc,omitempty"`
	Var         *VarReport  `json:"var,omitempty"`
	VarResults  []VarResult `json:"varResults,omitempty"`
}

// Summary is what a message, an Event or a status line needs.
type Summary struct {
	EtcConflicts     int      `json:"etcConflicts"`
	EtcConflictPaths []string `json:"etcConflictPaths,omitempty"` // first MaxSummaryPaths, escaped
	EtcLocalEdits    int      `json:"etcLocalEdits"`
	VarNotApplied    int      `json:"varNotApplied"`      // missing + differs + type-differs
	VarPaths         []string `json:"varPaths,omitempty"` // first MaxSummaryPaths, escaped
	Truncated        bool     `json:"truncated"`          // a preview hit a limit
}

// NewReport bundles previews (any may be nil) with the Host's clock.
func (h *Host) NewReport(etc *EtcReport, vr *VarReport, results []VarResult) *Report {
	r := &Report{Version: ReportVersion, GeneratedAt: h.now().UTC(), Etc: etc, Var: vr, VarResults: results}
	if etc != nil {
		for _, e := range etc.Conflicts() {
			r.Summary.EtcConflicts++
			if len(r.Summary.EtcConflictPaths) < MaxSummaryPaths {
				r.Summary.EtcConflictPaths = append(r.Summary.EtcConflictPaths, e.Path)
			}
		}
		r.Summary.EtcLocalEdits = len(etc.LocalEdits())
		r.Summary.Truncated = etc.Truncated
	}
	if vr != nil {
		for _, e := range vr.Entries {
			if e.Status == VarMissing || e.Status == VarDiffers || e.Status == VarTypeDiffers {
				r.Summary.VarNotApplied++
				if len(r.Summary.VarPaths) < MaxSummaryPaths {
					r.Summary.VarPaths = append(r.Summary.VarPaths, e.Path)
				}
			}
		}
		r.Summary.Truncated = r.Summary.Truncated || vr.Truncated
	}
	return r
}

// WriteReport writes rep as JSON to path atomically: a temporary file in
// the same directory (created when missing, 0755) is written, synced and
// renamed over path (0644).
func WriteReport(path string, rep *Report) (err error) {
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	_, err = tmp.Write(append(data, '\n'))
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write report %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		serr := d.Sync()
		d.Close()
		if serr != nil {
			return fmt.Errorf("write report %s: sync dir: %w", path, serr)
		}
	}
	return nil
}
