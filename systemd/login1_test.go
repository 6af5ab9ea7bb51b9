package systemd_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/systemd"
	"layerd.dev/layerd/test/dbusd"
)

const (
	login1Name    = "org.freedesktop.login1"
	login1Path    = "/org/freedesktop/login1"
	login1Manager = "org.freedesktop.login1.Manager"
)

// login1Policy lets anyone own and call org.freedesktop.login1 on the test bus, whose default
// policy denies both.
const login1Policy = `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <policy context="default">
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
</busconfig>
`

// inhibitorEntry is one a(ssssuu) entry in logind's wire order.
type inhibitorEntry struct {
	What, Who, Why, Mode string
	UID, PID             uint32
}

// fakeLogind is a tiny org.freedesktop.login1.Manager answering ListInhibitors.
type fakeLogind struct {
	mu      sync.Mutex
	list    []inhibitorEntry
	err     *dbus.Error
	release chan struct{} // when non-nil, ListInhibitors waits for it to close
}

func (f *fakeLogind) ListInhibitors() ([]inhibitorEntry, *dbus.Error) {
	f.mu.Lock()
	list, err, release := f.list, f.err, f.release
	f.mu.Unlock()
	if release != nil {
		<-release
	}
	return list, err
}

func (f *fakeLogind) set(list []inhibitorEntry, err *dbus.Error, release chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list, f.err, f.release = list, err, release
}

// startBus runs a private system-like bus with a policy that admits a test logind.
func startBus(t *testing.T) *dbusd.Bus {
	t.Helper()
	dir, err := os.MkdirTemp("", "login1-") // short: unix socket paths are limited to 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	b, err := dbusd.Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing the bus: %v", err)
		}
	})
	if err := os.WriteFile(filepath.Join(b.PolicyDir(), login1Name+".conf"), []byte(login1Policy), 0o644); err != nil {
		t.Fatal(err)
	}
	conn := connect(t, b.Address())
	// ReloadConfig returns once the daemon has re-read its configuration (SIGHUP does not wait).
	if err := conn.BusObject().Call("org.freedesktop.DBus.ReloadConfig", 0).Err; err != nil {
		t.Fatalf("reloading the bus policy: %v\n%s", err, b.Log())
	}
	return b
}

func connect(t *testing.T, address string) *dbus.Conn {
	t.Helper()
	conn, err := systemd.ConnectSystemBus(address)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// serveLogind owns org.freedesktop.login1 on b and exports a fakeLogind.
func serveLogind(t *testing.T, b *dbusd.Bus) *fakeLogind {
	t.Helper()
	conn := connect(t, b.Address())
	f := &fakeLogind{}
	if err := conn.Export(f, login1Path, login1Manager); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(login1Name, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("RequestName(%s) = %v, %v\n%s", login1Name, reply, err, b.Log())
	}
	return f
}

func newInhibitors(t *testing.T, conn *dbus.Conn) *systemd.LogindInhibitors {
	t.Helper()
	l, err := systemd.NewLogindInhibitors(conn)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestLogindInhibitors(t *testing.T) {
	b := startBus(t)
	ctx := context.Background()

	t.Run("without_logind_on_the_bus_it_is_ErrNoLogind", func(t *testing.T) {
		_, err := newInhibitors(t, connect(t, b.Address())).BlockingShutdown(ctx)
		if !errors.Is(err, systemd.ErrNoLogind) {
			t.Fatalf("err %v, want ErrNoLogind", err)
		}
		if !strings.Contains(err.Error(), "ServiceUnknown") {
			t.Errorf("err %q does not carry the bus error", err)
		}
	})

	fake := serveLogind(t, b)
	l := newInhibitors(t, connect(t, b.Address()))

	t.Run("returns_only_block_inhibitors_of_shutdown", func(t *testing.T) {
		fake.set([]inhibitorEntry{
			{"shutdown", "kubelet", "Kubelet needs time to handle node shutdown", "delay", 0, 812},
			{"shutdown", "backup", "Nightly backup running", "block", 0, 4242},
			{"sleep:shutdown:idle", "GNOME Shell", "Unsaved work", "block", 1000, 2001},
			{"sleep", "laptop", "Lid", "block", 1000, 2002},
			{"handle-power-key:handle-reboot-key", "logind-keys", "keys", "block", 0, 1},
			{"shutdown", "weak", "overridable by root", "block-weak", 0, 3},
		}, nil, nil)
		got, err := l.BlockingShutdown(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []systemd.Inhibitor{
			{Who: "backup", Why: "Nightly backup running", What: "shutdown", Mode: "block", UID: 0, PID: 4242},
			{Who: "GNOME Shell", Why: "Unsaved work", What: "sleep:shutdown:idle", Mode: "block", UID: 1000, PID: 2001},
		}
		if !slices.Equal(got, want) {
			t.Errorf("got %+v\nwant %+v", got, want)
		}
		if s := got[0].String(); s != "backup (uid 0, pid 4242): Nightly backup running" {
			t.Errorf("String() = %q", s)
		}
	})

	t.Run("no_blocking_inhibitor_is_an_empty_list", func(t *testing.T) {
		fake.set([]inhibitorEntry{{"shutdown", "kubelet", "graceful shutdown", "delay", 0, 812}}, nil, nil)
		got, err := l.BlockingShutdown(ctx)
		if err != nil || got == nil || len(got) != 0 {
			t.Errorf("got %#v, %v; want an empty non-nil list", got, err)
		}
	})

	t.Run("a_failing_logind_is_an_error_but_not_ErrNoLogind", func(t *testing.T) {
		fake.set(nil, dbus.MakeFailedError(errors.New("boom")), nil)
		_, err := l.BlockingShutdown(ctx)
		if err == nil || errors.Is(err, systemd.ErrNoLogind) || !strings.Contains(err.Error(), "boom") {
			t.Errorf("err %v, want logind's failure", err)
		}
	})

	t.Run("a_context_deadline_ends_a_hanging_call", func(t *testing.T) {
		release := make(chan struct{})
		defer close(release)
		fake.set(nil, nil, release)
		cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := l.BlockingShutdown(cctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("err %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("returned after %v", d)
		}
	})

	t.Run("connect_system_bus_honours_DBUS_SYSTEM_BUS_ADDRESS", func(t *testing.T) {
		fake.set([]inhibitorEntry{{"shutdown", "backup", "running", "block", 0, 7}}, nil, nil)
		t.Setenv("DBUS_SYSTEM_BUS_ADDRESS", b.Address())
		got, err := newInhibitors(t, connect(t, "")).BlockingShutdown(ctx)
		if err != nil || len(got) != 1 || got[0].Who != "backup" {
			t.Errorf("got %+v, %v; want the test logind's one inhibitor", got, err)
		}
	})
}

func TestNewLogindInhibitors(t *testing.T) {
	t.Run("rejects_a_nil_connection", func(t *testing.T) {
		if _, err := systemd.NewLogindInhibitors(nil); err == nil {
			t.Error("nil connection accepted")
		}
	})
	t.Run("connecting_to_a_missing_bus_names_the_address", func(t *testing.T) {
		addr := "unix:path=" + filepath.Join(t.TempDir(), "none")
		_, err := systemd.ConnectSystemBus(addr)
		if err == nil || !strings.Contains(err.Error(), addr) {
			t.Errorf("err %v, want one naming %s", err, addr)
		}
	})
}

func TestFakeInhibitors(t *testing.T) {
	t.Run("returns_its_list_or_its_error", func(t *testing.T) {
		f := &systemd.FakeInhibitors{List: []systemd.Inhibitor{{Who: "x", Mode: "block", What: "shutdown"}}}
		if got, err := f.BlockingShutdown(context.Background()); err != nil || len(got) != 1 {
			t.Errorf("got %v, %v", got, err)
		}
		f.Err = systemd.ErrNoLogind
		if _, err := f.BlockingShutdown(context.Background()); !errors.Is(err, systemd.ErrNoLogind) {
			t.Errorf("err %v", err)
		}
	})
}
