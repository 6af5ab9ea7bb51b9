package hostfs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/test/harness"
)

// podEnv makes the test binary act as the agent inside a pod (TestMain).
const podEnv = "HOSTFS_TEST_POD"

type podJob struct {
	Booted, Staged hostfs.DeploymentRef
	Digest         string
}

func TestMain(m *testing.M) {
	if job := os.Getenv(podEnv); job != "" {
		if err := runInPod(job); err != nil {
			fmt.Fprintln(os.Stderr, "pod:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runInPod is what the agent will do, with the DaemonSet's paths.
func runInPod(jobJSON string) error {
	var job podJob
	if err := json.Unmarshal([]byte(jobJSON), &job); err != nil {
		return err
	}
	ctx := context.Background()
	h, err := hostfs.New(hostfs.Options{HostRoot: "/host", Log: zap.NewNop()})
	if err != nil {
		return err
	}
	etc, err := h.PreviewEtc(ctx, job.Booted, job.Staged)
	if err != nil {
		return err
	}
	vr, err := h.PreviewVar(ctx, job.Staged)
	if err != nil {
		return err
	}
	results, err := h.CreateMissingVar(ctx, vr)
	if err != nil {
		return err
	}
	if _, err := h.EtcBackupAndApply(ctx, etc, job.Digest); err != nil {
		return err
	}
	if err := os.WriteFile("/host/sysroot/probe", nil, 0o644); err == nil {
		return fmt.Errorf("the sysroot is writable in the pod")
	}
	return hostfs.WriteReport("/run/layerd/report.json", h.NewReport(etc, vr, results))
}

func TestInAPodWithAReadOnlySysroot(t *testing.T) {
	t.Parallel()
	n, ctx := newNode(t, func(tree string) { mustWrite(filepath.Join(tree, "usr/etc/app.conf"), "level=1\n") })
	write(t, filepath.Join(n.booted.Path, "etc"), "app.conf", "level=local\n", 0o644)
	staged := n.stage(t, ctx, func(tree string) {
		mustWrite(filepath.Join(tree, "usr/etc/app.conf"), "level=2\n")
		mustWrite(filepath.Join(tree, "var/lib/mytool/state.db"), "db\n")
	})
	digest := "sha256:" + strings.Repeat("e", 64)
	job, err := json.Marshal(podJob{Booted: ref(n.booted), Staged: ref(staged), Digest: digest})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	pod, err := harness.StartPod(harness.PodSpec{
		RunDir: n.runDir, Root: n.booted.Path, Var: n.s.StaterootVar(), Sysroot: n.s.Path,
		Path: os.Args[0], Args: []string{os.Args[0]}, Env: []string{podEnv + "=" + string(job)},
		Stdout: &stdout, Stderr: &stderr,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := pod.Wait(ctx); err != nil {
		t.Fatalf("pod: %v\nstdout: %s\nstderr: %s", err, stdout.String(), stderr.String())
	}

	t.Run("writes the report to the node's run", func(t *testing.T) {
		var rep hostfs.Report
		data, err := os.ReadFile(filepath.Join(n.runDir, "layerd/report.json"))
		if err != nil {
			t.Fatal(err)
		}
		must(t, json.Unmarshal(data, &rep))
		if rep.Summary.EtcConflicts != 1 || rep.Summary.EtcConflictPaths[0] != "app.conf" || rep.Summary.VarNotApplied != 2 {
			t.Errorf("summary %+v", rep.Summary)
		}
	})
	t.Run("writes only through the live etc and var", func(t *testing.T) {
		if got := readString(t, filepath.Join(n.s.StaterootVar(), "lib/mytool/state.db")); got != "db\n" {
			t.Errorf("state.db %q", got)
		}
		if got := readString(t, filepath.Join(n.booted.Path, "etc/app.conf")); got != "level=1\n" {
			t.Errorf("app.conf %q, want the booted default back", got)
		}
		if got := readString(t, filepath.Join(n.s.StaterootVar(), hostfs.BackupDir, digest, "files/app.conf")); got != "level=local\n" {
			t.Errorf("backup %q", got)
		}
		if _, err := os.Lstat(filepath.Join(n.s.Path, "probe")); !os.IsNotExist(err) {
			t.Errorf("probe written through the sysroot: %v", err)
		}
	})
}
