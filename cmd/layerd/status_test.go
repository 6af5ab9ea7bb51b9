package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

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
