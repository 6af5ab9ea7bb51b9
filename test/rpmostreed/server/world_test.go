package server_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/test/dbusd"
	"layerd.dev/layerd/test/rpmostreed/server"
)

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	digestC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	osPath  = dbus.ObjectPath("/org/projectatomic/rpmostree1/fedora_coreos")
)

// world is a private system bus with the stand-in serving a memBackend.
type world struct {
	bus     *dbusd.Bus
	srv     *server.Server
	backend *memBackend
	socket  string
	timers  *manualTimers
	exits   chan int
}

// startWorld starts dbus-daemon (test/dbusd) and the stand-in; the force-close timer only fires
// through w.timers.fire().
func startWorld(t *testing.T) *world {
	t.Helper()
	dir, err := os.MkdirTemp("", "rpmostreed-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	bus, err := dbusd.Start(dir)
	if err != nil {
		t.Fatalf("starting dbus-daemon (Debian package dbus-daemon): %v", err)
	}
	t.Cleanup(func() { _ = bus.Close() })
	w := &world{bus: bus, backend: newMemBackend(digestA), socket: filepath.Join(dir, "txn.sock"),
		timers: &manualTimers{}, exits: make(chan int, 1)}
	w.srv, err = server.Start(context.Background(), w.backend, server.Options{
		BusAddress: bus.Address(), SysrootPath: "/sysroot", TxnSocket: w.socket,
		AfterFunc: w.timers.afterFunc, Exit: func(code int) { w.exits <- code },
		Log: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.srv.Close() })
	return w
}

// client is the production client on the world's bus.
func (w *world) client(t *testing.T, opts rpmostree.Options) *rpmostree.Client {
	t.Helper()
	if opts.Log == nil {
		opts.Log = zaptest.NewLogger(t)
	}
	c, err := rpmostree.NewWithAddress(context.Background(), w.bus.Address(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// raw is a plain godbus connection to the world's bus.
func (w *world) raw(t *testing.T) *dbus.Conn {
	t.Helper()
	conn, err := dbus.Connect(w.bus.Address())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func callOS(conn *dbus.Conn, method string, args ...any) (string, error) {
	var addr string
	err := conn.Object(server.BusName, osPath).Call(server.OSIface+"."+method, 0, args...).Store(&addr)
	return addr, err
}

func sysrootProp(t *testing.T, conn *dbus.Conn, name string) dbus.Variant {
	t.Helper()
	v, err := conn.Object(server.BusName, server.SysrootPath).GetProperty(server.SysrootIface + "." + name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitIdle waits until ActiveTransactionPath is "" again.
func waitIdle(t *testing.T, conn *dbus.Conn) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if sysrootProp(t, conn, "ActiveTransactionPath").Value() == "" {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("transaction still active: %v", sysrootProp(t, conn, "ActiveTransaction"))
}

// peer is a raw p2p connection to a transaction that records its signals.
type peer struct {
	conn *dbus.Conn
	sigs chan *dbus.Signal
}

func dialPeer(t *testing.T, address string) *peer {
	t.Helper()
	conn, err := dbus.Dial(address)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Auth(nil); err != nil {
		t.Fatal(err)
	}
	p := &peer{conn: conn, sigs: make(chan *dbus.Signal, 256)}
	conn.Signal(p.sigs)
	t.Cleanup(func() { _ = conn.Close() })
	return p
}

func (p *peer) start(t *testing.T) bool {
	t.Helper()
	var started bool
	if err := p.conn.Object("", "/").Call(server.TxnIface+".Start", 0).Store(&started); err != nil {
		t.Fatal(err)
	}
	return started
}

// finished waits for Finished and returns its body, collecting the other signal names.
func (p *peer) finished(t *testing.T) (bool, string, []string) {
	t.Helper()
	var names []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case s, ok := <-p.sigs:
			if !ok {
				t.Fatal("connection closed before Finished")
			}
			member := s.Name[strings.LastIndex(s.Name, ".")+1:]
			if member == "Finished" {
				return s.Body[0].(bool), s.Body[1].(string), names
			}
			names = append(names, member)
		case <-timeout:
			t.Fatalf("no Finished; got %v", names)
		}
	}
}

// noMoreFinished asserts that no further Finished arrives within a short while.
func (p *peer) noMoreFinished(t *testing.T) {
	t.Helper()
	timeout := time.After(200 * time.Millisecond)
	for {
		select {
		case s, ok := <-p.sigs:
			if ok && strings.HasSuffix(s.Name, ".Finished") {
				t.Fatalf("unexpected second Finished %v", s.Body)
			}
			if !ok {
				return
			}
		case <-timeout:
			return
		}
	}
}

// manualTimers captures AfterFunc calls; fire runs the pending ones.
type manualTimers struct {
	mu sync.Mutex
	fs []func()
}

func (m *manualTimers) afterFunc(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fs = append(m.fs, f)
	return func() bool { return true }
}

func (m *manualTimers) fire() {
	m.mu.Lock()
	fs := m.fs
	m.fs = nil
	m.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

func (m *manualTimers) pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.fs)
}

func refspec(digest string) string { return "ostree-unverified-registry:127.0.0.1:5000/os@" + digest }

func opts(kv ...any) map[string]dbus.Variant {
	m := map[string]dbus.Variant{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = dbus.MakeVariant(kv[i+1])
	}
	return m
}
