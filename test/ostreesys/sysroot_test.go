package ostreesys

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// statusLine matches `ostree admin status` deployment lines:
// "* tos <csum>.<serial> (pending)".
var statusLine = regexp.MustCompile(`(?m)^([* ]) (\S+) ([0-9a-f]{64})\.(\d+)(?: \(([a-z ]+)\))?$`)

type statusEntry struct {
	booted     bool
	osname, id string
	state      string
}

func parseStatus(out string) []statusEntry {
	var es []statusEntry
	for _, m := range statusLine.FindAllStringSubmatch(out, -1) {
		es = append(es, statusEntry{booted: m[1] == "*", osname: m[2], id: m[3] + "." + m[4], state: m[5]})
	}
	return es
}

// assertMatchesStatus checks Deployments() against `ostree admin status`.
func assertMatchesStatus(t *testing.T, ds []Deployment, status string) {
	t.Helper()
	es := parseStatus(status)
	if len(es) != len(ds) {
		t.Fatalf("Deployments() has %d entries, ostree admin status %d:\n%s", len(ds), len(es), status)
	}
	for i, d := range ds {
		id := fmt.Sprintf("%s.%d", d.Checksum, d.Serial)
		if es[i].id != id || es[i].osname != d.OSName {
			t.Errorf("index %d: Deployments() says %s %s, status says %s %s", i, d.OSName, id, es[i].osname, es[i].id)
		}
		if d.Staged != (es[i].state == "staged") {
			t.Errorf("index %d: Staged=%v but status state %q", i, d.Staged, es[i].state)
		}
	}
}

func TestDeployMergesEtcAndSharesVar(t *testing.T) {
	t.Parallel()
	s, ctx := newSysroot(t, "tos")
	v1 := commitVersion(t, ctx, s, "1", etcV1)
	var d1, d2 Deployment
	timed(t, "deploy v1", func() (err error) {
		o := ContainerOrigin("localhost:5000/os:1")
		d1, err = s.Deploy(ctx, v1, DeployOptions{Kargs: []string{"root=LABEL=root"}, Origin: &o})
		return err
	})

	t.Run("first deployment is read back from disk", func(t *testing.T) {
		if d1.Checksum != v1 || d1.Serial != 0 || d1.Index != 0 || d1.OSName != "tos" {
			t.Errorf("d1 = %+v", d1)
		}
		if d1.Version != "1" || d1.ManifestDigest != "sha256:"+strings.Repeat("1", 64) || d1.Timestamp.IsZero() {
			t.Errorf("commit metadata: version %q digest %q ts %v", d1.Version, d1.ManifestDigest, d1.Timestamp)
		}
		if want := "ostree-unverified-registry:localhost:5000/os:1"; d1.Origin.ContainerImageReference != want {
			t.Errorf("origin = %+v, want %s", d1.Origin, want)
		}
		if d1.Path != s.DeploymentDir(d1) || readFile(t, filepath.Join(d1.Path, "etc/motd")) != "motd v1\n" {
			t.Errorf("path %s / DeploymentDir %s", d1.Path, s.DeploymentDir(d1))
		}
	})

	// Local edits in the "running" deployment's /etc.
	writeFile(t, filepath.Join(d1.Path, "etc/app.conf"), "level=local\n")
	writeFile(t, filepath.Join(d1.Path, "etc/local.conf"), "mine\n")
	if err := os.Remove(filepath.Join(d1.Path, "etc/hostname")); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(s.StaterootVar(), "lib/layerd"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(s.StaterootVar(), "lib/layerd/state"), "kept\n")

	v2 := commitVersion(t, ctx, s, "2", etcV2)
	timed(t, "deploy v2", func() (err error) {
		o := ContainerOrigin("localhost:5000/os:2")
		d2, err = s.Deploy(ctx, v2, DeployOptions{Origin: &o})
		return err
	})

	t.Run("three-way merge keeps local edits and takes new defaults", func(t *testing.T) {
		etc := filepath.Join(d2.Path, "etc")
		if got := readFile(t, filepath.Join(etc, "app.conf")); got != "level=local\n" {
			t.Errorf("app.conf = %q, want the local edit", got)
		}
		if got := readFile(t, filepath.Join(etc, "motd")); got != "motd v2\n" {
			t.Errorf("motd = %q, want the new default", got)
		}
		if got := readFile(t, filepath.Join(etc, "new.conf")); got != "new in v2\n" {
			t.Errorf("new.conf = %q", got)
		}
		if got := readFile(t, filepath.Join(etc, "local.conf")); got != "mine\n" {
			t.Errorf("local.conf = %q", got)
		}
		assertMissing(t, filepath.Join(etc, "hostname"))
		if got := readFile(t, filepath.Join(d1.Path, "etc/motd")); got != "motd v1\n" {
			t.Errorf("old deployment's motd changed: %q", got)
		}
	})

	t.Run("deployments agree with ostree admin status", func(t *testing.T) {
		ds, err := s.Deployments()
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Checksum != v2 || ds[1].Checksum != v1 || ds[0].BLSVersion <= ds[1].BLSVersion {
			t.Fatalf("deployments = %+v", ds)
		}
		if !slices.Contains(ds[0].Kargs(), "root=LABEL=root") {
			t.Errorf("kargs not carried over from the merge deployment: %q", ds[0].Options)
		}
		if ds[0].Origin.ContainerImageReference != "ostree-unverified-registry:localhost:5000/os:2" || ds[0].Version != "2" {
			t.Errorf("new default = %+v", ds[0])
		}
		out, err := run(ctx, "ostree", "admin", "status", "--sysroot="+s.Path)
		if err != nil {
			t.Fatal(err)
		}
		assertMatchesStatus(t, ds, string(out))
	})

	t.Run("pinning is read back from the origin", func(t *testing.T) {
		if err := s.Pin(ctx, 1, true); err != nil {
			t.Fatal(err)
		}
		ds, err := s.Deployments()
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Pinned || !ds[1].Pinned || ds[1].Checksum != v1 {
			t.Fatalf("pinned flags: %+v", ds)
		}
		if ds[1].Origin.ContainerImageReference == "" {
			t.Errorf("pinning lost the origin: %+v", ds[1].Origin)
		}
	})

	t.Run("booted /usr is read-only and host /usr untouched", func(t *testing.T) {
		probe := "/usr/.ostreesys-write-probe"
		_, err := s.ExecBooted(ctx, d2.Path, t.TempDir(), "touch", probe)
		if err == nil || !strings.Contains(err.Error(), "Read-only file system") {
			t.Errorf("touch %s inside the fake boot: %v", probe, err)
		}
		assertMissing(t, probe)
		assertMissing(t, filepath.Join(d2.Path, probe))
	})

	t.Run("var is the stateroot's and shared by both deployments", func(t *testing.T) {
		for _, d := range []Deployment{d1, d2} {
			ents, _ := os.ReadDir(filepath.Join(d.Path, "var"))
			if len(ents) != 0 {
				t.Errorf("%s/var is not empty: %v", d.Path, ents)
			}
			out, err := s.ExecBooted(ctx, d.Path, t.TempDir(), "cat", "/var/lib/layerd/state")
			if err != nil || string(out) != "kept\n" {
				t.Errorf("booted into v%s, /var/lib/layerd/state = %q, %v", d.Version, out, err)
			}
		}
	})
}

func TestStagedDeploymentFinalizesWithLateEtcEdits(t *testing.T) {
	t.Parallel()
	s, ctx := newSysroot(t, "tos")
	v1 := commitVersion(t, ctx, s, "1", etcV1)
	var d1 Deployment
	timed(t, "deploy v1", func() (err error) {
		d1, err = s.Deploy(ctx, v1, DeployOptions{Kargs: []string{"root=LABEL=root"}})
		return err
	})
	runDir := filepath.Join(t.TempDir(), "run")
	s.RunDir = runDir
	status := func(dep Deployment, run string) string {
		t.Helper()
		var out []byte
		timed(t, "booted status", func() (err error) {
			out, err = s.ExecBooted(ctx, dep.Path, run, "ostree", "admin", "status")
			return err
		})
		return string(out)
	}

	t.Run("booted status marks the booted deployment", func(t *testing.T) {
		es := parseStatus(status(d1, runDir))
		if len(es) != 1 || !es[0].booted || es[0].id != v1+".0" {
			t.Fatalf("status entries = %+v", es)
		}
	})

	v2 := commitVersion(t, ctx, s, "2", etcV2)
	writeFile(t, filepath.Join(runDir, "v2.origin"), string(ContainerOrigin("localhost:5000/os:2").Marshal()))
	timed(t, "deploy --stage v2", func() error {
		_, err := s.ExecBooted(ctx, d1.Path, runDir, "ostree", "admin", "deploy", "--stage",
			"--origin-file=/run/v2.origin", v2)
		return err
	})

	t.Run("staged deployment is listed first", func(t *testing.T) {
		st := status(d1, runDir)
		if !strings.Contains(st, "(staged)") {
			t.Fatalf("no (staged) in status:\n%s", st)
		}
		ds, err := s.Deployments()
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || !ds[0].Staged || ds[0].Checksum != v2 || ds[1].Checksum != v1 || ds[1].Staged {
			t.Fatalf("deployments = %+v", ds)
		}
		if ds[0].Origin.ContainerImageReference != "ostree-unverified-registry:localhost:5000/os:2" {
			t.Errorf("staged origin = %+v", ds[0].Origin)
		}
		assertMatchesStatus(t, ds, st)
	})

	// Edit /etc AFTER staging: the merge happens at finalization.
	writeFile(t, filepath.Join(d1.Path, "etc/app.conf"), "level=after-staging\n")
	timed(t, "finalize-staged", func() error {
		_, err := s.ExecBooted(ctx, d1.Path, runDir, "ostree", "admin", "finalize-staged")
		return err
	})

	var ds []Deployment
	t.Run("finalized deployment is pending and carries the late edit", func(t *testing.T) {
		st := status(d1, runDir)
		if !strings.Contains(st, "(pending)") {
			t.Errorf("no (pending) in status:\n%s", st)
		}
		var err error
		if ds, err = s.Deployments(); err != nil {
			t.Fatal(err)
		}
		if len(ds) != 2 || ds[0].Staged || ds[0].Checksum != v2 || ds[1].Checksum != v1 {
			t.Fatalf("deployments = %+v", ds)
		}
		assertMatchesStatus(t, ds, st)
		if got := readFile(t, filepath.Join(ds[0].Path, "etc/app.conf")); got != "level=after-staging\n" {
			t.Errorf("v2 app.conf = %q, want the edit made after staging", got)
		}
		if got := readFile(t, filepath.Join(ds[0].Path, "etc/new.conf")); got != "new in v2\n" {
			t.Errorf("v2 new.conf = %q", got)
		}
		if ds[0].Origin.ContainerImageReference != "ostree-unverified-registry:localhost:5000/os:2" {
			t.Errorf("finalized origin = %+v", ds[0].Origin)
		}
	})

	t.Run("rebooting into the default boots v2 with v1 as rollback", func(t *testing.T) {
		if len(ds) == 0 {
			t.Fatal("no deployments from the previous step")
		}
		es := parseStatus(status(ds[0], filepath.Join(t.TempDir(), "run2")))
		if len(es) != 2 || !es[0].booted || es[0].id != v2+".0" || es[1].state != "rollback" {
			t.Fatalf("status after reboot = %+v", es)
		}
	})
}

func TestRemoveLeavesNothing(t *testing.T) {
	t.Parallel()
	s, ctx := newSysroot(t, "tos")
	v1 := commitVersion(t, ctx, s, "1", etcV1)
	if _, err := s.Deploy(ctx, v1, DeployOptions{}); err != nil {
		t.Fatal(err)
	}
	timed(t, "remove", s.Remove)
	assertMissing(t, s.Path)
	if err := s.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestInitRefusesNonEmptyDirectory(t *testing.T) {
	if err := Prerequisites(); err != nil {
		t.Fatalf("need root and the ostree tools: %v", err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "precious"), "keep me")
	if _, err := Init(t.Context(), dir, "tos"); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Init on a non-empty dir: %v", err)
	}
	if got := readFile(t, filepath.Join(dir, "precious")); got != "keep me" {
		t.Errorf("existing content changed: %q", got)
	}
}
