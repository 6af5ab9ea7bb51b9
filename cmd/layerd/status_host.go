package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"go.uber.org/zap"

	"layerd.dev/layerd/daemon/agent"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/rpmostree"
)

// statusHostOptions say where `layerd status` finds the host's /etc, /var and the agent's report.
type statusHostOptions struct {
	hostRoot, report string
	verbose          bool
}

// hostStatus is the "layerd" member of `layerd status --json` (docs/cli.md): the agent's last
// host report and the /etc drift measured now.
type hostStatus struct {
	ReportFile string `json:"reportFile"`
	// Report is the report file as the agent wrote it (docs/hostfs.md); omitted when there is none.
	Report        *hostfs.Report `json:"report,omitempty"`
	ReportError   string         `json:"reportError,omitempty"`
	EtcDrift      *driftStatus   `json:"etcDrift,omitempty"`
	EtcDriftError string         `json:"etcDriftError,omitempty"`
}

// driftStatus is the booted deployment's /etc drift: paths changed locally relative to its defaults.
type driftStatus struct {
	Files     int          `json:"files"`
	Paths     []driftEntry `json:"paths,omitempty"` // with --verbose
	Truncated bool         `json:"truncated"`
	Limit     string       `json:"limit,omitempty"`
}

type driftEntry struct {
	Path  string          `json:"path"`
	Class hostfs.EtcClass `json:"class"`
}

// statusJSON is the bootc document with the "layerd" member added.
type statusJSON struct {
	rpmostree.BootcHost
	Layerd hostStatus `json:"layerd"`
}

// readHostStatus reads the report file and measures the drift of the booted deployment. Either
// failing is recorded, not returned: the deployments are still worth printing.
func readHostStatus(ctx context.Context, st *rpmostree.Status, o statusHostOptions) hostStatus {
	hs := hostStatus{ReportFile: o.report}
	data, err := os.ReadFile(o.report)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		hs.ReportError = err.Error()
	default:
		var rep hostfs.Report
		if err := json.Unmarshal(data, &rep); err != nil {
			hs.ReportError = fmt.Sprintf("parsing %s: %v", o.report, err)
		} else {
			hs.Report = &rep
		}
	}
	drift, err := measureDrift(ctx, st, o)
	if err != nil {
		hs.EtcDriftError = err.Error()
	}
	hs.EtcDrift = drift
	return hs
}

func measureDrift(ctx context.Context, st *rpmostree.Status, o statusHostOptions) (*driftStatus, error) {
	if st.Booted == nil {
		return nil, errors.New("no booted deployment")
	}
	h, err := hostfs.New(hostfs.Options{HostRoot: o.hostRoot, Log: zap.NewNop()})
	if err != nil {
		return nil, err
	}
	b := st.Booted
	rep, err := h.EtcDrift(ctx, hostfs.DeploymentRef{OSName: b.OSName, Checksum: b.Checksum, Serial: int(b.Serial)})
	if err != nil {
		return nil, err
	}
	d := &driftStatus{Files: len(rep.Entries), Truncated: rep.Truncated, Limit: rep.Limit}
	if o.verbose {
		for _, e := range rep.Entries {
			d.Paths = append(d.Paths, driftEntry{Path: e.Path, Class: e.Class})
		}
	}
	return d, nil
}

// writeHostStatus prints the report's summary and the drift after the deployments table.
func writeHostStatus(out io.Writer, hs hostStatus, verbose bool) error {
	var b strings.Builder
	switch {
	case hs.ReportError != "":
		fmt.Fprintf(&b, "\nHost report: unreadable: %s\n", hs.ReportError)
	case hs.Report == nil:
		fmt.Fprintf(&b, "\nHost report: none yet (%s)\n", hs.ReportFile)
	default:
		writeHostReport(&b, hs.ReportFile, hs.Report, verbose)
	}
	switch d := hs.EtcDrift; {
	case hs.EtcDriftError != "":
		fmt.Fprintf(&b, "/etc drift: unknown: %s\n", hs.EtcDriftError)
	default:
		fmt.Fprintf(&b, "/etc drift from the booted image's defaults: %d %s%s\n", d.Files, plural(d.Files, "file", "files"), partial(d.Truncated, d.Limit))
		for _, e := range d.Paths {
			fmt.Fprintf(&b, "  %-17s %s\n", e.Class, e.Path)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func writeHostReport(b *strings.Builder, file string, rep *hostfs.Report, verbose bool) {
	s := rep.Summary
	fmt.Fprintf(b, "\nHost report (%s, %s)%s:\n", file, rep.GeneratedAt.UTC().Format("2006-01-02T15:04:05Z"), partial(s.Truncated, ""))
	if rep.Etc != nil {
		conflicts := s.EtcConflictPaths
		if verbose {
			conflicts = nil
			for _, e := range rep.Etc.Conflicts() {
				conflicts = append(conflicts, e.Path)
			}
		}
		fmt.Fprintf(b, "  /etc conflicts:      %s\n", counted(s.EtcConflicts, conflicts))
		fmt.Fprintf(b, "  /etc local edits:    %d\n", s.EtcLocalEdits)
	}
	if rep.Var != nil {
		notApplied := s.VarPaths
		if verbose {
			notApplied = nil
			for _, e := range rep.Var.Entries {
				if e.Status == hostfs.VarMissing || e.Status == hostfs.VarDiffers || e.Status == hostfs.VarTypeDiffers {
					notApplied = append(notApplied, e.Path+" ("+string(e.Status)+")")
				}
			}
		}
		fmt.Fprintf(b, "  /var not applied:    %s\n", counted(s.VarNotApplied, notApplied))
	}
	if len(rep.VarResults) > 0 {
		var created []string
		n := 0
		for _, r := range rep.VarResults {
			if r.Action == hostfs.Created {
				n++
				if verbose || len(created) < hostfs.MaxSummaryPaths {
					created = append(created, r.Path)
				}
			}
		}
		fmt.Fprintf(b, "  /var created:        %s\n", counted(n, created))
	}
}

// counted is "n" followed by the paths and how many more are not listed.
func counted(n int, paths []string) string {
	s := fmt.Sprint(n)
	if len(paths) > 0 {
		s += "  " + strings.Join(paths, ", ")
		if n > len(paths) {
			s += fmt.Sprintf(" and %d more", n-len(paths))
		}
	}
	return s
}

func partial(truncated bool, limit string) string {
	switch {
	case truncated && limit != "":
		return " (partial: " + limit + ")"
	case truncated:
		return " (partial: a walk limit was hit)"
	}
	return ""
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// defaultReportPath is where the agent writes its host report (the host's /run).
const defaultReportPath = agent.DefaultReportPath
