package backend

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// imageWorld is a loopback registry with a signed base image, a signed
// layered image on top of it, an unsigned image, and the node-side trust
// files (policy requiring sigstore signatures for the whole registry).
type imageWorld struct {
	reg              *registry.Registry
	trust            osimage.TrustFiles
	base, layered    *osimage.Image
	unsigned, update *osimage.Image
}

func newImageWorld(t *testing.T) *imageWorld {
	t.Helper()
	ctx := t.Context()
	w := &imageWorld{}
	timed(t, "registry + images + signing", func() error {
		var err error
		if w.reg, err = registry.Start(registry.Options{Dir: t.TempDir()}); err != nil {
			return err
		}
		t.Cleanup(func() { _ = w.reg.Close() })
		keys, err := osimage.GenerateKeys(t.TempDir(), "pass")
		if err != nil {
			return err
		}
		if w.trust, err = osimage.WriteTrust(t.TempDir(), w.reg.Addr(), keys); err != nil {
			return err
		}
		b := &osimage.Builder{Registry: w.reg.Addr()}
		if w.base, err = b.Base(ctx, osimage.Spec{Repo: "fcos/os", Tag: "v1"}); err != nil {
			return err
		}
		if w.layered, err = b.Layered(ctx, w.base, osimage.Spec{Repo: "fcos/layered", Tag: "v2", Version: "2",
			Files: map[string]osimage.File{
				"etc/motd":                {Content: "layered motd v2\n"},
				"etc/app.conf":            {Content: "# app defaults\nlevel=2\n"},
				"etc/new.conf":            {Content: "new in v2\n"},
				"usr/bin/layered-tool":    {Content: "#!/bin/sh\n", Mode: 0o755},
				"usr/share/layerd/marker": {Content: "layered\n"},
			}, Remove: []string{"etc/hostname"}}); err != nil {
			return err
		}
		if w.update, err = b.Layered(ctx, w.base, osimage.Spec{Repo: "fcos/layered", Tag: "v3", Version: "3",
			Files: map[string]osimage.File{"usr/share/layerd/marker": {Content: "v3\n"}}}); err != nil {
			return err
		}
		if w.unsigned, err = b.Base(ctx, osimage.Spec{Repo: "fcos/unsigned", Tag: "v1"}); err != nil {
			return err
		}
		for _, img := range []*osimage.Image{w.base, w.layered, w.update} {
			if err := osimage.Sign(ctx, img.Ref, keys); err != nil {
				return err
			}
		}
		return nil
	})
	return w
}

// options points a node at the world's trust files.
func (w *imageWorld) options(o *Options) {
	o.PolicyPath = w.trust.PolicyPath
	o.RegistriesD = w.trust.RegistriesDDir
	o.RegistriesConf = w.trust.RegistriesConfPath
	o.BlobInfoCacheDir = w.trust.BlobInfoCacheDir
}

func signedRef(img *osimage.Image) string { return "ostree-image-signed:docker://" + img.Pinned }

// TestSignedImageLifecycle is the acceptance path on real parts: a node on
// a signed base image stages the signed layered image, finalizes, boots,
// rolls back and cleans up.
func TestSignedImageLifecycle(t *testing.T) {
	w := newImageWorld(t)
	n := newEmptyNode(t, w.options)
	n.deployImage(signedRef(w.base))
	layeredRef := signedRef(w.layered)

	t.Run("an unsigned image is rejected by the policy", func(t *testing.T) {
		err := n.b.Stage(n.ctx, StageRequest{Refspec: "ostree-image-signed:docker://" + w.unsigned.Pinned}, &recorder{})
		if err == nil || !strings.Contains(err.Error(), "A signature was required, but no signature exists") {
			t.Fatalf("err = %v", err)
		}
		if ds, _ := n.deployments(); len(ds) != 1 {
			t.Errorf("a rejected pull left %d deployments", len(ds))
		}
	})
	t.Run("a policy defaulting to insecureAcceptAnything is refused", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(p, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		opts := n.opts
		opts.PolicyPath = p
		b, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Stage(n.ctx, StageRequest{Refspec: layeredRef}, &recorder{})
		if err == nil || err.Error() != "containers-policy.json specifies a default of `insecureAcceptAnything`; refusing usage" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("staging the signed layered image reports a locked staged container deployment", func(t *testing.T) {
		rec := &recorder{}
		timed(t, "stage layered (locked)", func() error {
			return n.b.Stage(n.ctx, StageRequest{Refspec: layeredRef, LockFinalization: true}, rec)
		})
		if !rec.has("Message:Pulling manifest: "+layeredRef) || !rec.has("DownloadProgress") ||
			!rec.has("PercentProgress:") || !rec.has("TaskBegin:Staging deployment") || rec.bytes == 0 {
			t.Errorf("progress %v (bytes %d)", rec.events, rec.bytes)
		}
		ds, booted := n.deployments()
		if len(ds) != 2 || booted != 1 {
			t.Fatalf("deployments %d booted %d", len(ds), booted)
		}
		d := ds[0]
		for key, sig := range map[string]string{"container-image-reference": "s", "container-image-reference-digest": "s",
			"serial": "i", "timestamp": "t", "staged": "b", "base-commit-meta": "a{sv}"} {
			wantSig(t, d, key, sig)
		}
		if _, ok := d["finalization-locked"]; ok {
			t.Error("lock-finalization must not show the legacy finalization-locked key")
		}
		if d["container-image-reference"].Value() != layeredRef ||
			d["container-image-reference-digest"].Value() != w.layered.Digest.String() ||
			d["version"].Value() != "2" || d["staged"].Value() != true {
			t.Errorf("staged dict %v", d)
		}
		if _, ok := d["origin"]; ok {
			t.Error("a container deployment reports origin")
		}
		meta := d["base-commit-meta"].Value().(map[string]dbus.Variant)
		if meta[metaManifestDigest].Value() != w.layered.Digest.String() {
			t.Errorf("base-commit-meta %v", meta)
		}
		if ds[1]["container-image-reference"].Value() != signedRef(w.base) || ds[1]["booted"].Value() != true {
			t.Errorf("booted dict %v", ds[1])
		}
		n.assertStatusAgrees()
	})
	t.Run("a restarted backend reports identical deployments", func(t *testing.T) {
		before, bi := n.deployments()
		after, ai, err := n.newBackend().Deployments(n.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if bi != ai || !reflect.DeepEqual(before, after) {
			t.Errorf("before %v\nafter %v", before, after)
		}
	})
	t.Run("rebasing to the staged refspec again fails with equal refs", func(t *testing.T) {
		err := n.b.Stage(n.ctx, StageRequest{Refspec: layeredRef}, &recorder{})
		if err == nil || err.Error() != "Old and new refs are equal: "+layeredRef {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("an unplanned boot with the locked staged deployment boots the base again", func(t *testing.T) {
		res := n.boot()
		if !res.SkippedLocked || res.Booted.Checksum == "" {
			t.Fatalf("boot %+v", res)
		}
		ds, _ := n.deployments()
		if len(ds) != 1 || ds[0]["container-image-reference"].Value() != signedRef(w.base) {
			t.Fatalf("deployments %v", ds)
		}
	})
	t.Run("finalize with the digest and boot: layered booted, base rollback, /etc merged at shutdown", func(t *testing.T) {
		timed(t, "restage layered (locked, cached)", func() error {
			return n.b.Stage(n.ctx, StageRequest{Refspec: layeredRef, LockFinalization: true}, &recorder{})
		})
		// Local /etc changes after staging, before the reboot.
		if err := os.WriteFile(n.bootedEtc("app.conf"), []byte("level=local\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(n.bootedEtc("local.conf"), []byte("mine\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: w.base.Digest.String()}); err == nil ||
			err.Error() != "Expected staged base checksum "+w.base.Digest.String()+", but found "+w.layered.Digest.String() {
			t.Errorf("wrong digest: %v", err)
		}
		if err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: w.layered.Digest.String()}); err != nil {
			t.Fatal(err)
		}
		if res := n.boot(); !res.Finalized {
			t.Fatalf("boot %+v", res)
		}
		ds, booted := n.deployments()
		if len(ds) != 2 || booted != 0 || ds[0]["container-image-reference"].Value() != layeredRef ||
			ds[1]["container-image-reference"].Value() != signedRef(w.base) {
			t.Fatalf("deployments %v booted %d", ds, booted)
		}
		for name, want := range map[string]string{"app.conf": "level=local\n", "local.conf": "mine\n",
			"motd": "layered motd v2\n", "new.conf": "new in v2\n"} {
			if got := readFile(t, n.bootedEtc(name)); got != want {
				t.Errorf("/etc/%s = %q, want %q", name, got, want)
			}
		}
		if _, err := os.Lstat(n.bootedEtc("hostname")); !os.IsNotExist(err) {
			t.Errorf("/etc/hostname removed by the image is still there: %v", err)
		}
		n.assertStatusAgrees()
	})
	t.Run("download-only imports without deploying", func(t *testing.T) {
		rec := &recorder{}
		if err := n.b.Stage(n.ctx, StageRequest{Refspec: signedRef(w.update), DownloadOnly: true}, rec); err != nil {
			t.Fatal(err)
		}
		if ds, _ := n.deployments(); len(ds) != 2 || !rec.has("Message:"+msgDownloaded) {
			t.Errorf("deployments %d events %v", len(ds), rec.events)
		}
	})
	t.Run("upgrading a digest-pinned origin finds no upgrade", func(t *testing.T) {
		rec := &recorder{}
		if err := n.b.Stage(n.ctx, StageRequest{}, rec); err != nil {
			t.Fatal(err)
		}
		if !rec.has("Message:" + msgNoUpgrade) {
			t.Errorf("events %v", rec.events)
		}
	})
	t.Run("rollback boots the base image again, cleanup removes the layered one", func(t *testing.T) {
		if err := n.b.Rollback(n.ctx, &recorder{}); err != nil {
			t.Fatal(err)
		}
		n.assertStatusAgrees()
		n.boot()
		ds, booted := n.deployments()
		if booted != 0 || ds[0]["container-image-reference"].Value() != signedRef(w.base) {
			t.Fatalf("deployments %v booted %d", ds, booted)
		}
		if err := n.b.Cleanup(n.ctx, []string{CleanupRollback}); err != nil {
			t.Fatal(err)
		}
		if ds, _ := n.deployments(); len(ds) != 1 {
			t.Errorf("deployments after cleanup: %v", ds)
		}
		n.assertStatusAgrees()
	})
	t.Run("an unverified refspec still consults the node's policy", func(t *testing.T) {
		ref := "ostree-unverified-registry:" + w.unsigned.Ref
		err := n.b.Stage(n.ctx, StageRequest{Refspec: ref}, &recorder{})
		if err == nil || !strings.Contains(err.Error(), "A signature was required") {
			t.Fatalf("unsigned image through ostree-unverified-registry with a signatures-required policy: %v", err)
		}
		if ds, _ := n.deployments(); ds[0]["staged"].Value() == true {
			t.Fatalf("something was staged: %v", ds[0])
		}
	})
	t.Run("an unverified refspec pulls an unsigned image the policy accepts", func(t *testing.T) {
		permissive := filepath.Join(t.TempDir(), "policy.json")
		if err := os.WriteFile(permissive, []byte(`{"default":[{"type":"insecureAcceptAnything"}]}`), 0o644); err != nil {
			t.Fatal(err)
		}
		saved := n.b.opts.PolicyPath
		n.b.opts.PolicyPath = permissive
		defer func() { n.b.opts.PolicyPath = saved }()
		ref := "ostree-unverified-registry:" + w.unsigned.Ref
		if err := n.b.Stage(n.ctx, StageRequest{Refspec: ref}, &recorder{}); err != nil {
			t.Fatal(err)
		}
		ds, _ := n.deployments()
		if ds[0]["container-image-reference"].Value() != ref ||
			ds[0]["container-image-reference-digest"].Value() != w.unsigned.Digest.String() {
			t.Errorf("staged %v", ds[0])
		}
	})
}
