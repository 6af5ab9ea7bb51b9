package hostfs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/hostfs"
)

const nonUTF8 = "caf\xe9.conf"

// etcV1 and etcV2 are the booted and staged images' /etc defaults.
func etcV1(tree string) {
	etc := filepath.Join(tree, "usr/etc")
	for name, content := range map[string]string{
		"motd": "motd v1\n", "app.conf": "level=1\n", "keep.conf": "k\n", "hostname": "host-1\n",
		"mode.conf": "m\n", "owner.conf": "o1\n", "gone.conf": "gone\n", "d/inner.conf": "i\n",
		"locdel/x.conf": "x\n",
	} {
		mustWrite(filepath.Join(etc, name), content)
	}
	mustDo(os.Symlink("motd", filepath.Join(etc, "motd.link")))
}

func etcV2(tree string) {
	etc := filepath.Join(tree, "usr/etc")
	for name, content := range map[string]string{
		"motd": "motd v2\n", "app.conf": "level=2\n", "keep.conf": "k\n", "hostname": "host-2\n",
		"mode.conf": "m\n", "owner.conf": "o2\n", "d/inner.conf": "i\n", "newdir/x.conf": "new\n",
		"same-as-new.conf": "same\n", "locdel/x.conf": "x2\n",
	} {
		mustWrite(filepath.Join(etc, name), content)
	}
	mustDo(os.Symlink("motd", filepath.Join(etc, "motd.link")))
}

func mustWrite(p, content string) {
	mustDo(os.MkdirAll(filepath.Dir(p), 0o755))
	mustDo(os.WriteFile(p, []byte(content), 0o644))
}

func mustDo(err error) {
	if err != nil {
		panic(err)
	}
}

// editEtc makes the admin's local changes in the live /etc.
func editEtc(t *testing.T, etc string) {
	write(t, etc, "app.conf", "level=local\n", 0o644)
	write(t, etc, "keep.conf", "k-edited\n", 0o644)
	write(t, etc, "local.conf", "mine\n", 0o644)
	write(t, etc, "same-as-new.conf", "same\n", 0o644)
	write(t, etc, "localdir/sub/c.conf", "c\n", 0o600)
	write(t, etc, nonUTF8, "latin1 name\n", 0o644)
	must(t, os.Remove(filepath.Join(etc, "hostname")))
	must(t, os.RemoveAll(filepath.Join(etc, "locdel")))
	must(t, os.Chmod(filepath.Join(etc, "mode.conf"), 0o600))
	must(t, os.Chown(filepath.Join(etc, "owner.conf"), 1000, 1000))
	must(t, os.Chmod(filepath.Join(etc, "d"), 0o700))
	must(t, os.Remove(filepath.Join(etc, "motd.link")))
	must(t, os.Symlink("/etc/shadow", filepath.Join(etc, "motd.link")))
	must(t, os.Symlink("../../../../..", filepath.Join(etc, "escape")))
}

// configDiffLine is a line of config-diff; g_print escapes non-UTF-8
// names as hostfs.Escape does and prefixes them.
var configDiffLine = regexp.MustCompile(`(?m)^(?:\[Invalid UTF-8\] )?[MAD]    (.+)$`)

func TestPreviewEtcOnRealDeployments(t *testing.T) {
	t.Parallel()
	n, ctx := newNode(t, etcV1)
	liveEtc := filepath.Join(n.booted.Path, "etc")
	editEtc(t, liveEtc)
	staged := n.stage(t, ctx, etcV2)
	h := n.host(t, hostfs.Limits{})
	rep, err := h.PreviewEtc(ctx, ref(n.booted), ref(staged))
	if err != nil {
		t.Fatal(err)
	}
	classes := map[string]hostfs.EtcClass{}
	for _, e := range rep.Entries {
		classes[e.RawPath()] = e.Class
		t.Logf("%-20s %-19s local=%v image=%v", e.Path, e.Class, e.Local, e.Image)
	}

	t.Run("classifies each kind of change", func(t *testing.T) {
		want := map[string]hostfs.EtcClass{
			"motd":                hostfs.NewDefaultApplies,
			"gone.conf":           hostfs.NewDefaultApplies,
			"newdir":              hostfs.NewDefaultApplies,
			"newdir/x.conf":       hostfs.NewDefaultApplies,
			"app.conf":            hostfs.Conflict,
			"owner.conf":          hostfs.Conflict,
			"keep.conf":           hostfs.LocalEditKept,
			"mode.conf":           hostfs.LocalEditKept,
			"motd.link":           hostfs.LocalEditKept,
			"d":                   hostfs.LocalEditKept,
			"same-as-new.conf":    hostfs.LocalEditKept,
			"local.conf":          hostfs.LocalOnly,
			"escape":              hostfs.LocalOnly,
			"localdir":            hostfs.LocalOnly,
			"localdir/sub":        hostfs.LocalOnly,
			"localdir/sub/c.conf": hostfs.LocalOnly,
			nonUTF8:               hostfs.LocalOnly,
			"hostname":            hostfs.DeletedLocally,
			"locdel":              hostfs.DeletedLocally,
		}
		for p, c := range want {
			if classes[p] != c {
				t.Errorf("%q: class %q, want %q", p, classes[p], c)
			}
		}
		if len(classes) != len(want) {
			t.Errorf("%d entries, want %d: %v", len(classes), len(want), classes)
		}
		if rep.Truncated || rep.Counts[hostfs.Conflict] != 2 {
			t.Errorf("truncated=%v counts=%v", rep.Truncated, rep.Counts)
		}
	})

	t.Run("reports a non-UTF-8 name escaped", func(t *testing.T) {
		for _, e := range rep.Entries {
			if e.RawPath() == nonUTF8 {
				if !e.Escaped || e.Path != `caf\xe9.conf` {
					t.Errorf("entry %+v", e)
				}
				return
			}
		}
		t.Error("no entry for the non-UTF-8 name")
	})

	t.Run("local edits equal what ostree admin config-diff lists", func(t *testing.T) {
		out, err := n.s.ExecBooted(ctx, n.booted.Path, n.runDir, "ostree", "admin", "config-diff")
		if err != nil {
			t.Fatal(err)
		}
		var got, want []string
		for _, m := range configDiffLine.FindAllStringSubmatch(string(out), -1) {
			want = append(want, m[1])
		}
		for _, e := range rep.LocalEdits() {
			got = append(got, e.Path)
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("preview local edits:\n%q\nconfig-diff:\n%q", got, want)
		}
	})

	t.Run("after finalize-staged /etc matches the preview file for file", func(t *testing.T) {
		live := snapshot(t, liveEtc)
		newDefaults := snapshot(t, filepath.Join(staged.Path, "usr/etc"))
		want := map[string]fileState{}
		for p, st := range newDefaults {
			want[p] = st
		}
		for _, e := range rep.Entries {
			p := e.RawPath()
			switch e.Outcome {
			case hostfs.KeepsLocal:
				want[p] = live[p]
			case hostfs.Absent:
				for q := range want {
					if under(q, p) {
						delete(want, q)
					}
				}
			}
		}
		if _, err := n.s.ExecBooted(ctx, n.booted.Path, n.runDir, "ostree", "admin", "finalize-staged"); err != nil {
			t.Fatal(err)
		}
		got := snapshot(t, filepath.Join(staged.Path, "etc"))
		for p, w := range want {
			if g, ok := got[p]; !ok {
				t.Errorf("%q: missing after finalize, preview expected %+v", p, w)
			} else if g != w {
				t.Errorf("%q: after finalize %+v, preview expected %+v", p, g, w)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok && !strings.HasPrefix(p, ".") {
				t.Errorf("%q: present after finalize, the preview did not expect it", p)
			}
		}
	})
}
