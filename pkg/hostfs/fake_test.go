package hostfs_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/pkg/hostfs"
)

// fakeHost lays out a host root by hand (no libostree): two deployment
// directories with usr/etc defaults, a live etc and var.
type fakeHost struct {
	root           string
	booted, staged hostfs.DeploymentRef
}

func newFakeHost(t *testing.T) *fakeHost {
	t.Helper()
	f := &fakeHost{root: t.TempDir(),
		booted: hostfs.DeploymentRef{OSName: "tos", Checksum: strings.Repeat("a", 64)},
		staged: hostfs.DeploymentRef{OSName: "tos", Checksum: strings.Repeat("b", 64), Serial: 1}}
	for _, d := range []string{f.etc(f.booted), f.etc(f.staged), filepath.Join(f.root, "etc"), filepath.Join(f.root, "var")} {
		must(t, os.MkdirAll(d, 0o755))
	}
	return f
}

func (f *fakeHost) etc(d hostfs.DeploymentRef) string {
	return filepath.Join(f.root, "sysroot/ostree/deploy", d.OSName, "deploy", d.Checksum+"."+itoa(d.Serial), "usr/etc")
}

func itoa(i int) string { return string(rune('0' + i)) }

func (f *fakeHost) host(t *testing.T, l hostfs.Limits) *hostfs.Host {
	t.Helper()
	h, err := hostfs.New(hostfs.Options{HostRoot: f.root, Limits: l, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// both writes a default into the booted and the staged tree and the live /etc.
func (f *fakeHost) both(t *testing.T, rel, content string) {
	for _, dir := range []string{f.etc(f.booted), f.etc(f.staged), filepath.Join(f.root, "etc")} {
		write(t, dir, rel, content, 0o644)
	}
}

func quick(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPreviewEtcNeverReadsSpecialFilesOrFollowsLinks(t *testing.T) {
	f := newFakeHost(t)
	live := filepath.Join(f.root, "etc")
	f.both(t, "pipe.conf", "was a file\n")
	f.both(t, "sub/inner.conf", "x\n")
	must(t, os.Remove(filepath.Join(live, "pipe.conf")))
	must(t, syscall.Mkfifo(filepath.Join(live, "pipe.conf"), 0o644))
	must(t, syscall.Mkfifo(filepath.Join(live, "added.fifo"), 0o600))
	must(t, os.RemoveAll(filepath.Join(live, "sub")))
	must(t, os.Symlink("/", filepath.Join(live, "sub")))
	must(t, os.Symlink("loop", filepath.Join(live, "loop")))

	rep, err := f.host(t, hostfs.Limits{}).PreviewEtc(quick(t), f.booted, f.staged)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]hostfs.EtcEntry{}
	for _, e := range rep.Entries {
		got[e.Path] = e
	}
	t.Run("a fifo is reported, not read", func(t *testing.T) {
		if e := got["pipe.conf"]; e.Class != hostfs.LocalEditKept || e.Live.Kind != hostfs.KindFIFO {
			t.Errorf("pipe.conf: %+v", e)
		}
		if e := got["added.fifo"]; e.Class != hostfs.LocalOnly {
			t.Errorf("added.fifo: %+v", e)
		}
		if strings.Join(rep.Special, ",") != "added.fifo,pipe.conf" {
			t.Errorf("special = %q", rep.Special)
		}
	})
	t.Run("a symlink out of the tree is compared, not followed", func(t *testing.T) {
		if e := got["sub"]; e.Class != hostfs.LocalEditKept || e.Live.Target != "/" {
			t.Errorf("sub: %+v", e)
		}
		if _, ok := got["sub/inner.conf"]; ok || rep.FilesVisited > 20 {
			t.Errorf("walked through the link: visited %d, entries %v", rep.FilesVisited, got)
		}
		if e := got["loop"]; e.Class != hostfs.LocalOnly || e.Live.Target != "loop" {
			t.Errorf("loop: %+v", e)
		}
	})
}

func TestPreviewEtcSaysWhichLimitStoppedIt(t *testing.T) {
	f := newFakeHost(t)
	for i := range 50 {
		f.both(t, "many/f"+strings.Repeat("x", i), "same content in all three trees\n")
	}
	t.Run("entry limit", func(t *testing.T) {
		rep, err := f.host(t, hostfs.Limits{MaxFiles: 30}).PreviewEtc(quick(t), f.booted, f.staged)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Truncated || !strings.HasPrefix(rep.Limit, "max-files") || rep.FilesVisited != 30 {
			t.Errorf("truncated=%v limit=%q visited=%d", rep.Truncated, rep.Limit, rep.FilesVisited)
		}
	})
	t.Run("byte limit", func(t *testing.T) {
		rep, err := f.host(t, hostfs.Limits{MaxBytes: 100}).PreviewEtc(quick(t), f.booted, f.staged)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Truncated || !strings.HasPrefix(rep.Limit, "max-bytes") || rep.BytesRead > 100 {
			t.Errorf("truncated=%v limit=%q read=%d", rep.Truncated, rep.Limit, rep.BytesRead)
		}
	})
	t.Run("within limits", func(t *testing.T) {
		rep, err := f.host(t, hostfs.Limits{}).PreviewEtc(quick(t), f.booted, f.staged)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Truncated || rep.Unchanged != 51 || len(rep.Entries) != 0 {
			t.Errorf("truncated=%v unchanged=%d entries=%d", rep.Truncated, rep.Unchanged, len(rep.Entries))
		}
	})
}

func TestNewAndRefsAreChecked(t *testing.T) {
	log := zaptest.NewLogger(t)
	for name, o := range map[string]hostfs.Options{
		"no host root":    {Log: log},
		"no logger":       {HostRoot: "/host"},
		"negative limits": {HostRoot: "/host", Log: log, Limits: hostfs.Limits{MaxFiles: -1}},
	} {
		if _, err := hostfs.New(o); err == nil {
			t.Errorf("%s: New accepted %+v", name, o)
		}
	}
	f := newFakeHost(t)
	h := f.host(t, hostfs.Limits{})
	for _, bad := range []hostfs.DeploymentRef{
		{OSName: "..", Checksum: strings.Repeat("a", 64)},
		{OSName: "tos", Checksum: "../../../../etc"},
		{OSName: "tos", Checksum: strings.Repeat("c", 64)},
	} {
		if _, err := h.PreviewEtc(quick(t), bad, f.staged); err == nil {
			t.Errorf("PreviewEtc accepted booted %+v", bad)
		}
		if _, err := h.PreviewVar(quick(t), bad); err == nil {
			t.Errorf("PreviewVar accepted %+v", bad)
		}
	}
}

func TestEtcDriftListsLocalChangesToTheBootedDefaults(t *testing.T) {
	f := newFakeHost(t)
	live := filepath.Join(f.root, "etc")
	f.both(t, "a.conf", "a\n")
	f.both(t, "b.conf", "b\n")
	write(t, live, "a.conf", "edited\n", 0o644)
	write(t, live, "mine.conf", "x\n", 0o644)
	rep, err := f.host(t, hostfs.Limits{}).EtcDrift(quick(t), f.booted)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range rep.LocalEdits() {
		got = append(got, e.Path+"="+string(e.Class))
	}
	if strings.Join(got, " ") != "a.conf=local-edit-kept mine.conf=local-only" || len(rep.Entries) != 2 {
		t.Errorf("drift %q (entries %d)", got, len(rep.Entries))
	}
}
