package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/rpmostree"
)

type fakeStatusReader struct {
	st     *rpmostree.Status
	err    error
	closed bool
}

func (f *fakeStatusReader) Status(context.Context) (*rpmostree.Status, error) { return f.st, f.err }
func (f *fakeStatusReader) Close() error                                      { f.closed = true; return nil }

func runStatus(t *testing.T, r *fakeStatusReader, args ...string) (string, error) {
	t.Helper()
	cmd := newStatusCmd(func(context.Context) (statusReader, error) { return r, nil })
	if !slices.Contains(args, "--host-root") {
		// Never read the machine's own /etc and /run in a test.
		dir := t.TempDir()
		args = append(args, "--host-root", dir, "--report", filepath.Join(dir, "report.json"))
	}
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

func sampleStatus() *rpmostree.Status {
	booted := rpmostree.Deployment{
		ID: "fedora-c0.0", OSName: "fedora", Checksum: "c0", Booted: true, Version: "42.1", Timestamp: 1700000000,
		ContainerImageReference:       "ostree-unverified-registry:quay.io/org/os@sha256:" + strings.Repeat("a", 64),
		ContainerImageReferenceDigest: "sha256:" + strings.Repeat("a", 64),
	}
	return &rpmostree.Status{Deployments: []rpmostree.Deployment{booted}, Booted: &booted, Default: &booted}
}

func TestStatusCmd(t *testing.T) {
	t.Run("prints_booted_staged_and_rollback_rows", func(t *testing.T) {
		r := &fakeStatusReader{st: sampleStatus()}
		out, err := runStatus(t, r)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"ROLE", "booted", "quay.io/org/os@sha256:aaaa", "42.1", "2023-11-14T22:13:20Z", "staged", "rollback"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if !r.closed {
			t.Error("reader not closed")
		}
	})

	t.Run("prints_bootc_compatible_json", func(t *testing.T) {
		out, err := runStatus(t, &fakeStatusReader{st: sampleStatus()}, "--json")
		if err != nil {
			t.Fatal(err)
		}
		var h rpmostree.BootcHost
		if err := json.Unmarshal([]byte(out), &h); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		if h.Kind != "BootcHost" || h.Status.Booted == nil || h.Status.Booted.Image.ImageDigest != "sha256:"+strings.Repeat("a", 64) {
			t.Fatalf("json = %s", out)
		}
	})

	t.Run("fails_with_the_rpm_ostree_error", func(t *testing.T) {
		_, err := runStatus(t, &fakeStatusReader{err: errors.New("no daemon")})
		if err == nil || !strings.Contains(err.Error(), "no daemon") {
			t.Fatalf("err = %v", err)
		}
	})
}

// hostRootWithDrift lays out a host root whose booted deployment (checksum booted64) ships
// app.conf and motd under usr/etc, and whose /etc changed app.conf and added mine.conf.
func hostRootWithDrift(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	deploy := filepath.Join(root, "sysroot/ostree/deploy/fedora/deploy", booted64+".0")
	for path, content := range map[string]string{
		filepath.Join(deploy, "usr/etc/app.conf"): "level=1\n",
		filepath.Join(deploy, "usr/etc/motd"):     "hello\n",
		filepath.Join(root, "etc/app.conf"):       "level=local\n",
		filepath.Join(root, "etc/motd"):           "hello\n",
		filepath.Join(root, "etc/mine.conf"):      "mine\n",
	} {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

var booted64 = strings.Repeat("c", 64)

func hostStatusSample() *rpmostree.Status {
	st := sampleStatus()
	st.Booted.Checksum = booted64
	st.Deployments[0].Checksum = booted64
	return st
}

func sampleReport(t *testing.T, path string) {
	t.Helper()
	rep := &hostfs.Report{Version: hostfs.ReportVersion, GeneratedAt: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC),
		Summary: hostfs.Summary{EtcConflicts: 1, EtcConflictPaths: []string{"app.conf"}, EtcLocalEdits: 2,
			VarNotApplied: 2, VarPaths: []string{"lib/mytool/state.db", "log/mytool"}},
		Etc: &hostfs.EtcReport{Entries: []hostfs.EtcEntry{{Path: "app.conf", Class: hostfs.Conflict}, {Path: "mine.conf", Class: hostfs.LocalOnly}}},
		Var: &hostfs.VarReport{Entries: []hostfs.VarEntry{{Path: "lib/mytool/state.db", Status: hostfs.VarDiffers},
			{Path: "log/mytool", Status: hostfs.VarMissing}}},
		VarResults: []hostfs.VarResult{{Path: "lib/mytool/state.db", Action: hostfs.LeftUntouched, Status: hostfs.VarDiffers},
			{Path: "log/mytool", Action: hostfs.Created, Status: hostfs.VarMissing}},
	}
	if err := hostfs.WriteReport(path, rep); err != nil {
		t.Fatal(err)
	}
}

func TestStatusHost(t *testing.T) {
	t.Run("prints_the_report_summary_and_the_drift_count", func(t *testing.T) {
		root := hostRootWithDrift(t)
		report := filepath.Join(t.TempDir(), "report.json")
		sampleReport(t, report)
		out, err := runStatus(t, &fakeStatusReader{st: hostStatusSample()}, "--host-root", root, "--report", report)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Host report (" + report + ", 2026-03-01T12:00:00Z)", "/etc conflicts:      1  app.conf",
			"/etc local edits:    2", "/var not applied:    2  lib/mytool/state.db, log/mytool", "/var created:        1  log/mytool",
			"/etc drift from the booted image's defaults: 2 files"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "mine.conf") {
			t.Errorf("drift paths listed without --verbose:\n%s", out)
		}
	})
	t.Run("verbose_lists_the_drift_paths_with_their_class", func(t *testing.T) {
		root := hostRootWithDrift(t)
		out, err := runStatus(t, &fakeStatusReader{st: hostStatusSample()}, "--host-root", root, "--report", filepath.Join(root, "none.json"), "--verbose")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Host report: none yet", "local-edit-kept   app.conf", "local-only        mine.conf"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
	t.Run("json_adds_a_layerd_member_to_the_bootc_document", func(t *testing.T) {
		root := hostRootWithDrift(t)
		report := filepath.Join(t.TempDir(), "report.json")
		sampleReport(t, report)
		out, err := runStatus(t, &fakeStatusReader{st: hostStatusSample()}, "--json", "--verbose", "--host-root", root, "--report", report)
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Kind   string `json:"kind"`
			Layerd struct {
				ReportFile string `json:"reportFile"`
				Report     struct {
					Summary hostfs.Summary `json:"summary"`
				} `json:"report"`
				EtcDrift struct {
					Files int `json:"files"`
					Paths []struct {
						Path, Class string
					} `json:"paths"`
				} `json:"etcDrift"`
			} `json:"layerd"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		l := doc.Layerd
		if doc.Kind != "BootcHost" || l.ReportFile != report || l.Report.Summary.EtcConflicts != 1 || l.EtcDrift.Files != 2 || len(l.EtcDrift.Paths) != 2 {
			t.Errorf("json = %s", out)
		}
	})
	t.Run("an_unreadable_host_is_reported_not_fatal", func(t *testing.T) {
		out, err := runStatus(t, &fakeStatusReader{st: hostStatusSample()}, "--host-root", t.TempDir(), "--report", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"Host report: unreadable", "/etc drift: unknown"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})
}
