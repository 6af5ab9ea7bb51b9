package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// The /etc and /var reconciliation of docs/hostfs.md, through the real parts: three nodes of
// one world update to an image that changes the default of /etc/app.conf (which the admin
// edited on every node), adds /etc/foo.conf and ships /var/lib/mytool/state.db and
// /var/log/mytool/. Each node is in its own pool:
//
//	keep   etcPolicy Keep (default), varPolicy CreateMissing
//	wins   etcPolicy ImageWins, varPolicy CreateMissing; the host has its own state.db
//	fails  etcPolicy ImageWins; its FinalizeDeployment fails (the stand-in's fail-next knob)
//
// A Lease held by "maintenance" in each pool stops every node at WaitingForSlot, so what the
// agents report before the reboot can be read (the node's /run is emptied by the reboot).

const (
	appDefaultV1 = "# app defaults\nlevel=1\n" // the base image's
	appDefaultV2 = "# app defaults\nlevel=2\n"
	appEdited    = "# app defaults\nlevel=local\n"
	imageStateDB = "db shipped by the image\n"
	hostStateDB  = "the host's own db\n"
	maintenance  = "maintenance"
)

func imageHostfs(t *testing.T, w *harness.World) *osimage.Image {
	return ownImage(t, w, osimage.Spec{Repo: "fcos/os", Tag: "hostfs", Version: "2.8", Files: map[string]osimage.File{
		"etc/app.conf":            {Content: appDefaultV2},
		"etc/foo.conf":            {Content: "foo=new\n"},
		"var/lib/mytool/state.db": {Content: imageStateDB},
		"var/log/mytool":          {Dir: true},
	}}, true)
}

func TestHostFSPreviewAndPolicies(t *testing.T) {
	w := ownWorld(t, 3)
	kube := w.Kube.Client
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	img := imageHostfs(t, w)
	keep, wins, fails := w.Nodes[0], w.Nodes[1], w.Nodes[2]
	pools := map[*harness.Node]string{keep: "keep", wins: "wins", fails: "fails"}

	setPools(ctx, t, kube, "keep:\n  varPolicy: CreateMissing\n"+
		"wins:\n  etcPolicy: ImageWins\n  varPolicy: CreateMissing\n"+
		"fails:\n  etcPolicy: ImageWins\n")
	for n, pool := range pools {
		labelPool(ctx, t, kube, n.Name, pool)
		holdPool(ctx, t, kube, pool)
		booted, err := n.Booted()
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(booted.Dir, "etc/app.conf"), appEdited)
		writeFile(t, filepath.Join(booted.Dir, "etc/mine.conf"), "the admin's own\n")
	}
	writeFile(t, filepath.Join(wins.Sysroot.StaterootVar(), "lib/mytool/state.db"), hostStateDB)

	var mu sync.Mutex
	stagedMsg := map[string]string{}
	tw, err := w.WatchTransitions(ctx, func(tr harness.Transition) {
		if tr.Status.Phase == nodestatus.PhaseStaged {
			mu.Lock()
			stagedMsg[tr.Node] = tr.Status.Message
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer tw.Stop()
	for n := range pools {
		startAgentPod(ctx, t, w, n)
	}
	reboots := map[string]int{}
	for n := range pools {
		waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
		reboots[n.Name] = n.Reboots()
	}
	began := time.Now()
	for n := range pools {
		annotate(ctx, t, kube, n.Name, img.Ref)
	}

	// Before the reboot: every node waits for its pool's slot.
	before := map[string]*preReboot{}
	for _, n := range []*harness.Node{keep, wins, fails} {
		waitNode(ctx, t, kube, n.Name, "WaitingForSlot", func(s nodestatus.Status) bool {
			return s.Phase == nodestatus.PhaseWaitingForSlot && strings.Contains(s.Message, "held by "+maintenance)
		})
		before[n.Name] = snapshotBeforeReboot(t, n)
	}
	t.Logf("every node staged and previewed after %v", time.Since(began).Round(time.Millisecond))

	t.Run("a_conflict_and_the_var_content_are_reported_before_the_reboot", func(t *testing.T) {
		for n, pool := range pools {
			mu.Lock()
			msg := stagedMsg[n.Name]
			mu.Unlock()
			t.Logf("%s (%s) Staged message: %s", n.Name, pool, msg)
			for _, want := range []string{"1 local edit shadows a new image default", ": app.conf.",
				"lib/mytool/state.db", "log/mytool"} {
				if !strings.Contains(msg, want) {
					t.Errorf("%s: the Staged message lacks %q", n.Name, want)
				}
			}
			waitEvent(ctx, t, kube, n.Name, string(reason.EtcConflict), 10*time.Second, func(e corev1.Event) bool {
				return e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "app.conf")
			})
			waitEvent(ctx, t, kube, n.Name, string(reason.VarContentNotApplied), 10*time.Second, func(e corev1.Event) bool {
				return strings.Contains(e.Message, "log/mytool")
			})
			rep := before[n.Name].report
			if s := rep.Summary; s.EtcConflicts != 1 || len(s.EtcConflictPaths) != 1 || s.EtcConflictPaths[0] != "app.conf" {
				t.Errorf("%s: report.json etc summary %+v", n.Name, s)
			}
			if got := classes(rep); got["foo.conf"] != hostfs.NewDefaultApplies || got["mine.conf"] != hostfs.LocalOnly || got["app.conf"] != hostfs.Conflict {
				t.Errorf("%s: report.json classes %v", n.Name, got)
			}
			statuses := varStatuses(rep)
			wantState := hostfs.VarMissing
			if n == wins {
				wantState = hostfs.VarDiffers
			}
			if statuses["lib/mytool/state.db"] != wantState || statuses["log/mytool"] != hostfs.VarMissing {
				t.Errorf("%s: report.json var statuses %v", n.Name, statuses)
			}
		}
		if s := nodeEvents(ctx, t, kube, keep.Name, string(reason.HostPreviewFailed)); len(s) > 0 {
			t.Errorf("the preview failed: %s", describeEvents(s))
		}
	})

	// The reboots: the failing finalize is armed on fails first, then every pool's slot freed.
	knob(t, fails, "fail-next injected finalize failure")
	for _, pool := range pools {
		releasePool(ctx, t, kube, pool)
	}
	for _, n := range []*harness.Node{keep, wins} {
		phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
			return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
		})
		t.Logf("%s Done after %v: %s", n.Name, time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
		if got := n.Reboots() - reboots[n.Name]; got != 1 {
			t.Errorf("%s: %d reboots, want 1", n.Name, got)
		}
	}
	waitNode(ctx, t, kube, fails.Name, "Degraded", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDegraded })

	t.Run("keep_leaves_the_edit_and_etc_matches_the_preview_file_for_file", func(t *testing.T) {
		etc := bootedEtc(t, keep)
		if got := readFile(t, filepath.Join(etc, "app.conf")); got != appEdited {
			t.Errorf("/etc/app.conf %q, want the edit kept", got)
		}
		checkFileForFile(t, before[keep.Name], snapshotTree(t, etc), false)
	})

	t.Run("image_wins_takes_the_new_default_and_keeps_the_edit_in_the_backup", func(t *testing.T) {
		etc := bootedEtc(t, wins)
		if got := readFile(t, filepath.Join(etc, "app.conf")); got != appDefaultV2 {
			t.Errorf("/etc/app.conf %q, want the new default", got)
		}
		backup := filepath.Join(wins.Sysroot.StaterootVar(), hostfs.BackupDir, img.Digest.String(), "files/app.conf")
		if got := readFile(t, backup); got != appEdited {
			t.Errorf("backup %s: %q, want the edit", backup, got)
		}
		checkFileForFile(t, before[wins.Name], snapshotTree(t, etc), true)
	})

	t.Run("create_missing_creates_what_is_missing_and_leaves_a_different_file_untouched", func(t *testing.T) {
		for _, n := range []*harness.Node{keep, wins} {
			vr := n.Sysroot.StaterootVar()
			wantDB := imageStateDB
			if n == wins {
				wantDB = hostStateDB
			}
			if got := readFile(t, filepath.Join(vr, "lib/mytool/state.db")); got != wantDB {
				t.Errorf("%s: /var/lib/mytool/state.db %q, want %q", n.Name, got, wantDB)
			}
			if fi, err := os.Stat(filepath.Join(vr, "log/mytool")); err != nil || !fi.IsDir() {
				t.Errorf("%s: /var/log/mytool: %v %v", n.Name, fi, err)
			}
			actions := map[string]hostfs.VarAction{}
			for _, r := range readReport(t, filepath.Join(n.RunDir, "layerd/report.json")).VarResults {
				actions[r.Path] = r.Action
			}
			wantAction := hostfs.Created
			if n == wins {
				wantAction = hostfs.LeftUntouched
			}
			if actions["lib/mytool/state.db"] != wantAction || actions["log/mytool"] != hostfs.Created {
				t.Errorf("%s: report.json after the boot: %v", n.Name, actions)
			}
		}
		waitEvent(ctx, t, kube, wins.Name, string(reason.VarContentNotApplied), 10*time.Second, func(e corev1.Event) bool {
			return strings.Contains(e.Message, "After the boot") && strings.Contains(e.Message, "lib/mytool/state.db")
		})
	})

	t.Run("image_wins_and_a_failing_finalize_put_the_admin_s_edits_back", func(t *testing.T) {
		node, err := kube.CoreV1().Nodes().Get(ctx, fails.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		if s.Reason != reason.FinalizeFailed || !strings.Contains(s.Message, "injected finalize failure") {
			t.Errorf("reason %s (%q), want FinalizeFailed with the stand-in's message", s.Reason, s.Message)
		}
		backups := filepath.Join(fails.Sysroot.StaterootVar(), hostfs.BackupDir)
		waitFor(t, "the backup retired by the restore", 30*time.Second, func() bool {
			m, _ := filepath.Glob(filepath.Join(backups, img.Digest.String()+".restored.*"))
			return len(m) == 1
		})
		if got := readFile(t, filepath.Join(bootedEtc(t, fails), "app.conf")); got != appEdited {
			t.Errorf("/etc/app.conf %q, want the edit back", got)
		}
		if got := fails.Reboots() - reboots[fails.Name]; got != 0 {
			t.Errorf("%d reboots after a failed finalize", got)
		}
	})

	t.Run("layerd_status_shows_the_report_and_the_drift", func(t *testing.T) {
		out := runInPod(t, keep, "status", "--json", "--verbose", "--host-root", "/host")
		var doc struct {
			Layerd struct {
				Report   hostfs.Report `json:"report"`
				EtcDrift struct {
					Files int `json:"files"`
					Paths []struct {
						Path  string `json:"path"`
						Class string `json:"class"`
					} `json:"paths"`
				} `json:"etcDrift"`
				EtcDriftError string `json:"etcDriftError"`
			} `json:"layerd"`
		}
		if err := json.Unmarshal([]byte(out), &doc); err != nil {
			t.Fatalf("%v in %s", err, out)
		}
		l := doc.Layerd
		drift := map[string]string{}
		for _, p := range l.EtcDrift.Paths {
			drift[p.Path] = p.Class
		}
		if l.EtcDriftError != "" || drift["app.conf"] != string(hostfs.LocalEditKept) || drift["mine.conf"] != string(hostfs.LocalOnly) ||
			l.EtcDrift.Files != len(l.EtcDrift.Paths) {
			t.Errorf("drift %+v (error %q)", l.EtcDrift, l.EtcDriftError)
		}
		if len(l.Report.VarResults) == 0 {
			t.Errorf("status shows no var results: %s", out)
		}
	})
}

// preReboot is what a node looked like while it waited for its slot.
type preReboot struct {
	report      hostfs.Report
	live        map[string]string // the live /etc
	newDefaults map[string]string // the staged deployment's usr/etc
}

func snapshotBeforeReboot(t *testing.T, n *harness.Node) *preReboot {
	t.Helper()
	rep := readReport(t, filepath.Join(n.RunDir, "layerd/report.json"))
	if rep.Etc == nil || rep.Var == nil {
		t.Fatalf("%s: the report has no /etc or /var preview", n.Name)
	}
	st := rep.Etc.Staged
	staged := filepath.Join(n.Sysroot.Path, "ostree/deploy", st.OSName, "deploy", fmt.Sprintf("%s.%d", st.Checksum, st.Serial))
	return &preReboot{report: rep, live: snapshotTree(t, filepath.Join(bootedDir(t, n), "etc")),
		newDefaults: snapshotTree(t, filepath.Join(staged, "usr/etc"))}
}

// checkFileForFile compares /etc after the boot with what the preview said the merge would
// do: per reported path its outcome (under ImageWins a conflict takes the new default), and
// every other path as it was.
func checkFileForFile(t *testing.T, b *preReboot, after map[string]string, imageWins bool) {
	t.Helper()
	want := map[string]string{}
	for p, v := range b.live {
		want[p] = v
	}
	reported := map[string]bool{}
	for _, e := range b.report.Etc.Entries {
		reported[e.Path] = true
		outcome := e.Outcome
		if imageWins && e.Class == hostfs.Conflict {
			outcome = hostfs.TakesNewDefault
		}
		switch outcome {
		case hostfs.TakesNewDefault:
			want[e.Path] = b.newDefaults[e.Path]
		case hostfs.Absent:
			delete(want, e.Path)
		}
	}
	paths := map[string]bool{}
	for p := range want {
		paths[p] = true
	}
	for p := range after {
		paths[p] = true
	}
	var diffs []string
	for p := range paths {
		if want[p] != after[p] {
			diffs = append(diffs, fmt.Sprintf("%s: preview says %q, /etc has %q (reported %t)", p, want[p], after[p], reported[p]))
		}
	}
	sort.Strings(diffs)
	for _, d := range diffs {
		t.Error(d)
	}
	t.Logf("%d paths of /etc compared with the preview (%d reported)", len(paths), len(b.report.Etc.Entries))
}

// snapshotTree describes every path below root without following symlinks: "file <content>",
// "dir", "link <target>" or "special".
func snapshotTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link " + target
		case d.IsDir():
			out[rel] = "dir"
		case d.Type().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			out[rel] = "file " + string(b)
		default:
			out[rel] = "special"
		}
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot of %s: %v", root, err)
	}
	return out
}

func classes(rep hostfs.Report) map[string]hostfs.EtcClass {
	out := map[string]hostfs.EtcClass{}
	for _, e := range rep.Etc.Entries {
		out[e.Path] = e.Class
	}
	return out
}

func varStatuses(rep hostfs.Report) map[string]hostfs.VarStatus {
	out := map[string]hostfs.VarStatus{}
	for _, e := range rep.Var.Entries {
		out[e.Path] = e.Status
	}
	return out
}

func readReport(t *testing.T, path string) hostfs.Report {
	t.Helper()
	var rep hostfs.Report
	if err := json.Unmarshal([]byte(readFile(t, path)), &rep); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rep
}

func bootedDir(t *testing.T, n *harness.Node) string {
	t.Helper()
	b, err := n.Booted()
	if err != nil {
		t.Fatalf("%s: booted deployment: %v", n.Name, err)
	}
	return b.Dir
}

func bootedEtc(t *testing.T, n *harness.Node) string { return filepath.Join(bootedDir(t, n), "etc") }

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func labelPool(ctx context.Context, t *testing.T, kube kubernetes.Interface, node, pool string) {
	t.Helper()
	patch := fmt.Sprintf(`{"metadata":{"labels":{%q:%q}}}`, nodestatus.LabelPool, pool)
	if _, err := kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("labelling %s: %v", node, err)
	}
}

// holdPool makes "maintenance" hold the only reboot slot of pool, freshly renewed.
func holdPool(ctx context.Context, t *testing.T, kube kubernetes.Interface, pool string) {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	holder, dur := maintenance, int32(600)
	l := &coordv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: coord.LeaseName(pool, 0), Namespace: harness.AgentNamespace,
			Labels: map[string]string{coord.LabelSlotPool: pool, coord.LabelSlotIndex: "0"}},
		Spec: coordv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &now, RenewTime: &now},
	}
	if _, err := kube.CoordinationV1().Leases(harness.AgentNamespace).Create(ctx, l, metav1.CreateOptions{}); err != nil {
		t.Fatalf("holding the slot of pool %s: %v", pool, err)
	}
}

func releasePool(ctx context.Context, t *testing.T, kube kubernetes.Interface, pool string) {
	t.Helper()
	if err := kube.CoordinationV1().Leases(harness.AgentNamespace).Delete(ctx, coord.LeaseName(pool, 0), metav1.DeleteOptions{}); err != nil {
		t.Fatalf("releasing the slot of pool %s: %v", pool, err)
	}
}
