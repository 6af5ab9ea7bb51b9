package hostfs_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/pkg/hostfs"
)

func TestWriteReport(t *testing.T) {
	f := newFakeHost(t)
	f.both(t, "app.conf", "v1\n")
	write(t, f.etc(f.staged), "app.conf", "v2\n", 0o644)
	write(t, filepath.Join(f.root, "etc"), "app.conf", "local\n", 0o644)
	write(t, filepath.Join(f.root, "etc"), nonUTF8, "x\n", 0o644)
	at := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	h, err := hostfs.New(hostfs.Options{HostRoot: f.root, Log: zaptest.NewLogger(t), Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	etc, err := h.PreviewEtc(quick(t), f.booted, f.staged)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "run/layerd/report.json")
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	write(t, filepath.Dir(path), "report.json", "stale", 0o600)
	if err := hostfs.WriteReport(path, h.NewReport(etc, nil, nil)); err != nil {
		t.Fatal(err)
	}

	t.Run("replaces the file and leaves no temporary behind", func(t *testing.T) {
		ents, err := os.ReadDir(filepath.Dir(path))
		if err != nil || len(ents) != 1 || ents[0].Name() != "report.json" {
			t.Fatalf("dir: %v %v", ents, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("mode: %v %v", fi, err)
		}
	})
	t.Run("carries the schema fields the docs describe", func(t *testing.T) {
		var doc struct {
			Version     int       `json:"version"`
			GeneratedAt time.Time `json:"generatedAt"`
			Summary     struct {
				EtcConflicts     int      `json:"etcConflicts"`
				EtcConflictPaths []string `json:"etcConflictPaths"`
				EtcLocalEdits    int      `json:"etcLocalEdits"`
			} `json:"summary"`
			Etc struct {
				Entries []struct {
					Path, Class, Outcome string
					Escaped              bool
				} `json:"entries"`
			} `json:"etc"`
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Version != hostfs.ReportVersion || !doc.GeneratedAt.Equal(at) {
			t.Errorf("version %d at %v", doc.Version, doc.GeneratedAt)
		}
		if doc.Summary.EtcConflicts != 1 || len(doc.Summary.EtcConflictPaths) != 1 || doc.Summary.EtcConflictPaths[0] != "app.conf" || doc.Summary.EtcLocalEdits != 2 {
			t.Errorf("summary %+v", doc.Summary)
		}
		found := false
		for _, e := range doc.Etc.Entries {
			if e.Path == `caf\xe9.conf` && e.Escaped && e.Class == "local-only" && e.Outcome == "keeps-local" {
				found = true
			}
		}
		if !found {
			t.Errorf("no escaped entry in %s", data)
		}
	})
}
