package backend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/dbusd"
	"layerd.dev/layerd/test/rpmostreed/server"
)

// standIn is the server with this backend on a private system bus, plus the
// production client; restart models the directory tier's reboot.
type standIn struct {
	t       *testing.T
	n       *node
	bus     *dbusd.Bus
	srv     *server.Server
	client  *rpmostree.Client
	socket  string
	reboots chan struct{}
}

func startStandIn(t *testing.T, n *node) *standIn {
	t.Helper()
	dir, err := os.MkdirTemp("", "backend-bus-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	s := &standIn{t: t, n: n, socket: filepath.Join(dir, "txn.sock"), reboots: make(chan struct{}, 4)}
	if s.bus, err = dbusd.Start(dir); err != nil {
		t.Fatalf("dbus-daemon (Debian package dbus-daemon): %v", err)
	}
	t.Cleanup(func() { _ = s.bus.Close() })
	n.opts.Reboot = func(context.Context) error { s.reboots <- struct{}{}; return nil }
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *standIn) start() {
	s.t.Helper()
	s.n.b = s.n.newBackend()
	var err error
	s.srv, err = server.Start(s.n.ctx, s.n.b, server.Options{BusAddress: s.bus.Address(),
		SysrootPath: s.n.sys.Path, TxnSocket: s.socket})
	if err != nil {
		s.t.Fatalf("stand-in: %v", err)
	}
	if s.client, err = rpmostree.NewWithAddress(s.n.ctx, s.bus.Address(), rpmostree.Options{}); err != nil {
		s.t.Fatalf("client: %v", err)
	}
}

func (s *standIn) stop() {
	if s.client != nil {
		_ = s.client.Close()
	}
	if s.srv != nil {
		_ = s.srv.Close()
	}
	s.client, s.srv = nil, nil
}

// reboot waits for the reboot request, then stops the stand-in, boots the
// node and starts a fresh stand-in on the same disk state.
func (s *standIn) reboot() BootResult {
	s.t.Helper()
	select {
	case <-s.reboots:
	case <-time.After(30 * time.Second):
		s.t.Fatal("no reboot was requested")
	}
	s.stop()
	res := s.n.boot()
	s.start()
	return res
}

func (s *standIn) status() *rpmostree.Status {
	s.t.Helper()
	st, err := s.client.Status(s.n.ctx)
	if err != nil {
		s.t.Fatalf("status: %v", err)
	}
	return st
}

// TestClientThroughStandIn runs the client ⇄ stand-in acceptance on
// the real backend: rebase to a signed image by digest with progress,
// finalize + reboot, rollback, cleanup.
func TestClientThroughStandIn(t *testing.T) {
	w := newImageWorld(t)
	n := newEmptyNode(t, w.options)
	n.deployImage(signedRef(w.base))
	s := startStandIn(t, n)
	layeredRef := signedRef(w.layered)
	digest := w.layered.Digest.String()

	t.Run("rebase to the signed image streams progress and stages it locked", func(t *testing.T) {
		var mu sync.Mutex
		var downloads, messages int
		timed(t, "Rebase over D-Bus", func() error {
			return s.client.Rebase(n.ctx, layeredRef, rpmostree.RebaseOptions{LockFinalization: true,
				Progress: func(ev rpmostree.Event) {
					mu.Lock()
					defer mu.Unlock()
					switch ev.(type) {
					case rpmostree.DownloadProgress:
						downloads++
					case rpmostree.Message:
						messages++
					}
				}})
		})
		if downloads == 0 || messages == 0 {
			t.Errorf("progress: %d download, %d message events", downloads, messages)
		}
		st := s.status()
		if st.Staged == nil || st.Staged.ContainerImageReferenceDigest != digest || st.Staged.FinalizationLocked ||
			st.Default == nil || st.Default.ID != st.Staged.ID || st.Booted == nil ||
			st.Booted.ContainerImageReference != signedRef(w.base) {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("finalize requests a reboot that boots the new image with the old one as rollback", func(t *testing.T) {
		if err := s.client.FinalizeDeployment(n.ctx, digest, rpmostree.FinalizeOptions{}); err != nil {
			t.Fatal(err)
		}
		if res := s.reboot(); !res.Finalized {
			t.Fatalf("boot %+v", res)
		}
		st := s.status()
		if st.Booted == nil || st.Booted.ContainerImageReferenceDigest != digest || st.Staged != nil ||
			st.Rollback == nil || st.Rollback.ContainerImageReference != signedRef(w.base) {
			t.Fatalf("status %+v", st)
		}
	})
	t.Run("rollback makes the base the default and cleanup removes it again", func(t *testing.T) {
		if err := s.client.Rollback(n.ctx, rpmostree.RollbackOptions{}); err != nil {
			t.Fatal(err)
		}
		st := s.status()
		if st.Default == nil || st.Default.ContainerImageReference != signedRef(w.base) || st.Default.Booted {
			t.Fatalf("status after rollback %+v", st)
		}
		if err := s.client.Cleanup(n.ctx, []string{rpmostree.CleanupPendingDeploy}, rpmostree.CleanupOptions{}); err != nil {
			t.Fatal(err)
		}
		st = s.status()
		if len(st.Deployments) != 1 || st.Rollback != nil || st.Default == nil || !st.Default.Booted {
			t.Fatalf("status after cleanup %+v", st)
		}
		n.assertStatusAgrees()
	})
	t.Run("a rollback with nothing to roll back fails with rpm-ostree's message", func(t *testing.T) {
		err := s.client.Rollback(n.ctx, rpmostree.RollbackOptions{})
		if err == nil || !strings.Contains(err.Error(), "No rollback deployment found") {
			t.Errorf("err = %v", err)
		}
	})
}
