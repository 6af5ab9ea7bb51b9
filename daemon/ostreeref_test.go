package daemon_test

import (
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
)

func TestAHostOnAnOstreeRef(t *testing.T) {
	m := newMachine(t)
	const ref = "fedora:fedora/x86_64/coreos/stable (commit 0123456789ab)"
	onRef := func() daemon.Observed {
		o := atRest()
		o.Node.Status = nodestatus.Status{Pool: nodestatus.DefaultPool}
		o.Host = daemon.HostView{BootedRef: ref}
		return o
	}

	t.Run("is_reported_done_naming_the_ref_without_a_current_image", func(t *testing.T) {
		d := m.Step(daemon.State{}, onRef())
		if d.Err != nil {
			t.Fatal(d.Err)
		}
		if len(d.Effects) != 1 {
			t.Fatalf("effects %s, want one Report", describe(d.Effects))
		}
		r, ok := d.Effects[0].(daemon.Report)
		if !ok || r.State != nodestatus.StateDone || r.CurrentImage != "" || r.BootedRef != ref {
			t.Fatalf("effect %+v, want Report(Done) with BootedRef %q and no CurrentImage", d.Effects[0], ref)
		}
	})

	t.Run("is_not_reported_again_once_the_node_says_so", func(t *testing.T) {
		o := onRef()
		o.Node.Status.State = nodestatus.StateDone
		o.Node.Status.Message = "Booted from the ostree ref " + ref + ", not from a container image"
		d := m.Step(daemon.State{}, o)
		if d.Err != nil || len(d.Effects) != 0 {
			t.Fatalf("effects %s (err %v), want none", describe(d.Effects), d.Err)
		}
	})

	t.Run("a_desired_image_moves_it_to_the_image", func(t *testing.T) {
		o := onRef()
		o.Node.Status.State = nodestatus.StateDone
		o.Node.Status.Message = "Booted from the ostree ref " + ref + ", not from a container image"
		o.Node.Status.DesiredImage = imgNew
		d := m.Step(daemon.State{}, o)
		if got, want := describe(d.Effects), "Report(Working/Resolving) Resolve("+imgNew+")"; d.Err != nil || got != want {
			t.Fatalf("effects %s (err %v), want %s", got, d.Err, want)
		}
	})
}
