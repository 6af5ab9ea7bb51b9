package backend

import (
	"reflect"
	"testing"
)

// TestLocalRefLifecycle drives the backend through stage, finalize, boot,
// rollback and cleanup with plain ostree refs from the local repository.
func TestLocalRefLifecycle(t *testing.T) {
	n := newNode(t, nil)
	v1, _ := n.deployments()
	v1sum := v1[0]["checksum"].Value().(string)

	t.Run("a fresh node has one booted deployment with rpm-ostree's types", func(t *testing.T) {
		ds, booted := n.deployments()
		if len(ds) != 1 || booted != 0 {
			t.Fatalf("deployments %d, booted %d", len(ds), booted)
		}
		d := ds[0]
		for key, sig := range map[string]string{"id": "s", "osname": "s", "checksum": "s", "serial": "i",
			"booted": "b", "staged": "b", "pinned": "b", "unlocked": "s", "timestamp": "t", "version": "s",
			"origin": "s", "base-commit-meta": "a{sv}", "packages": "as", "requested-packages": "as",
			"base-removals": "av", "base-local-replacements": "a(vv)", "base-remote-replacements": "a{sv}",
			"regenerate-initramfs": "b"} {
			wantSig(t, d, key, sig)
		}
		if d["origin"].Value() != testOS+"/stable" || d["version"].Value() != "1" || d["booted"].Value() != true {
			t.Errorf("dict %v", d)
		}
		if _, ok := d["container-image-reference"]; ok {
			t.Error("an ostree origin must not report container-image-reference")
		}
		if want := testOS + "-" + v1sum + ".0"; d["id"].Value() != want {
			t.Errorf("id %v, want %s", d["id"].Value(), want)
		}
	})

	v2sum := n.commitRef("2", etcV2)
	t.Run("upgrading stages the new commit as element 0", func(t *testing.T) {
		rec := &recorder{}
		timed(t, "stage v2", func() error { return n.b.Stage(n.ctx, StageRequest{}, rec) })
		ds, booted := n.deployments()
		if len(ds) != 2 || booted != 1 {
			t.Fatalf("deployments %d, booted %d", len(ds), booted)
		}
		if ds[0]["staged"].Value() != true || ds[0]["checksum"].Value() != v2sum {
			t.Errorf("element 0 = %v", ds[0])
		}
		if _, ok := ds[0]["finalization-locked"]; ok {
			t.Error("an unlocked staged deployment reports finalization-locked")
		}
		n.assertStatusAgrees()
	})
	t.Run("upgrading again reports no upgrade", func(t *testing.T) {
		rec := &recorder{}
		if err := n.b.Stage(n.ctx, StageRequest{}, rec); err != nil {
			t.Fatal(err)
		}
		if !rec.has("Message:" + msgNoUpgrade) {
			t.Errorf("events %v", rec.events)
		}
	})
	t.Run("rebasing to the same ref fails with equal refs", func(t *testing.T) {
		err := n.b.Stage(n.ctx, StageRequest{Refspec: testOS + "/stable"}, &recorder{})
		if err == nil || err.Error() != "Old and new refs are equal: "+testOS+"/stable" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("cache-only with download-only is refused", func(t *testing.T) {
		err := n.b.Stage(n.ctx, StageRequest{CacheOnly: true, DownloadOnly: true}, &recorder{})
		if err == nil || err.Error() != "Can't specify cache-only and download-only" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("rollback with a staged deployment is refused", func(t *testing.T) {
		err := n.b.Rollback(n.ctx, &recorder{})
		if err == nil || err.Error() != "Staged deployment (remove with cleanup -p)" {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("finalizing an unlocked deployment needs allow-unlocked", func(t *testing.T) {
		err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v2sum})
		if err == nil || err.Error() != "Staged deployment already unlocked" {
			t.Errorf("err = %v", err)
		}
		err = n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v1sum, AllowUnlocked: true})
		if want := "Expected staged base checksum " + v1sum + ", but found " + v2sum; err == nil || err.Error() != want {
			t.Errorf("err = %v", err)
		}
		if err := n.b.Finalize(n.ctx, FinalizeRequest{Checksum: v2sum, AllowUnlocked: true}); err != nil {
			t.Error(err)
		}
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
	t.Run("boot finalizes: the new commit is booted and the old one is rollback", func(t *testing.T) {
		res := n.boot()
		if !res.Finalized || res.Booted.Checksum != v2sum {
			t.Fatalf("boot %+v", res)
		}
		ds, booted := n.deployments()
		if len(ds) != 2 || booted != 0 || ds[1]["checksum"].Value() != v1sum {
			t.Fatalf("deployments %v booted %d", ds, booted)
		}
		n.assertStatusAgrees()
	})
	t.Run("the booted tier finds the booted deployment by the root's inode", func(t *testing.T) {
		st, err := n.b.read()
		if err != nil {
			t.Fatal(err)
		}
		for i, d := range st.Deployments {
			if got := bootedByInode(st.Deployments, d.Dir); got != i {
				t.Errorf("root %s: booted index %d, want %d", d.Dir, got, i)
			}
		}
		if got := bootedByInode(st.Deployments, n.sys.Path); got != -1 {
			t.Errorf("a root that is no deployment gives %d", got)
		}
	})
	t.Run("rollback makes the old deployment the default", func(t *testing.T) {
		rec := &recorder{}
		timed(t, "rollback", func() error { return n.b.Rollback(n.ctx, rec) })
		if !rec.has("Message:Moving '" + v1sum + ".0' to be first deployment") {
			t.Errorf("events %v", rec.events)
		}
		ds, booted := n.deployments()
		if booted != 1 || ds[0]["checksum"].Value() != v1sum {
			t.Fatalf("deployments %v booted %d", ds, booted)
		}
		n.assertStatusAgrees()
		res := n.boot()
		if res.Booted.Checksum != v1sum {
			t.Fatalf("booted %s after rollback", res.Booted.Checksum)
		}
		n.assertStatusAgrees()
	})
	t.Run("rollback twice returns to the newer deployment", func(t *testing.T) {
		if err := n.b.Rollback(n.ctx, &recorder{}); err != nil {
			t.Fatal(err)
		}
		ds, booted := n.deployments()
		if booted != 1 || ds[0]["checksum"].Value() != v2sum {
			t.Fatalf("deployments %v booted %d", ds, booted)
		}
		n.assertStatusAgrees()
		t.Run("and with only a pending one it moves the booted one back", func(t *testing.T) {
			if err := n.b.Cleanup(n.ctx, []string{CleanupRollback}); err != nil {
				t.Fatal(err)
			}
			if err := n.b.Rollback(n.ctx, &recorder{}); err != nil {
				t.Fatal(err)
			}
			ds, booted := n.deployments()
			if booted != 0 || ds[0]["checksum"].Value() != v1sum {
				t.Fatalf("deployments %v booted %d", ds, booted)
			}
			n.assertStatusAgrees()
		})
	})
	t.Run("cleanup removes the pending deployment, then rollback has nothing", func(t *testing.T) {
		if err := n.b.Cleanup(n.ctx, []string{CleanupPendingDeploy, CleanupRollback}); err != nil {
			t.Fatal(err)
		}
		ds, _ := n.deployments()
		if len(ds) != 1 || ds[0]["checksum"].Value() != v1sum {
			t.Fatalf("deployments %v", ds)
		}
		err := n.b.Rollback(n.ctx, &recorder{})
		if err == nil || err.Error() != "No rollback deployment found" {
			t.Errorf("err = %v", err)
		}
		n.assertStatusAgrees()
	})
	t.Run("an unknown cleanup element is refused", func(t *testing.T) {
		err := n.b.Cleanup(n.ctx, []string{"everything"})
		if err == nil || err.Error() != "Invalid cleanup type: everything" {
			t.Errorf("err = %v", err)
		}
	})
}
