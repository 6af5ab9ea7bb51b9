package dbusd

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

const (
	sysrootPath  = "/org/projectatomic/rpmostree1/Sysroot"
	sysrootIface = "org.projectatomic.rpmostree1.Sysroot"
	nobodyUID    = 65534
)

// fakeSysroot answers the two Sysroot methods the policy tells apart.
type fakeSysroot struct{ reloads chan struct{} }

func (f *fakeSysroot) GetOS(name string) (dbus.ObjectPath, *dbus.Error) {
	return "/org/projectatomic/rpmostree1/tos", nil
}

func (f *fakeSysroot) Reload() *dbus.Error {
	f.reloads <- struct{}{}
	return nil
}

// startBus starts a bus in a world-traversable directory (nobody must reach
// the socket; t.TempDir is 0700).
func startBus(t *testing.T) *Bus {
	t.Helper()
	if _, err := exec.LookPath("dbus-daemon"); err != nil {
		t.Fatalf("need dbus-daemon (Debian package dbus-daemon): %v", err)
	}
	dir, err := os.MkdirTemp("", "dbusd-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	b, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("dbus-daemon up in %v at %s", time.Since(start).Round(time.Millisecond), b.Address())
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return b
}

// serveSysroot connects as root, owns the rpm-ostree name and exports a
// fake Sysroot object.
func serveSysroot(t *testing.T, b *Bus) *fakeSysroot {
	t.Helper()
	conn, err := dbus.Connect(b.Address())
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	f := &fakeSysroot{reloads: make(chan struct{}, 8)}
	if err := conn.Export(f, sysrootPath, sysrootIface); err != nil {
		t.Fatal(err)
	}
	reply, err := conn.RequestName(RPMOstreeName, dbus.NameFlagDoNotQueue)
	if err != nil || reply != dbus.RequestNameReplyPrimaryOwner {
		t.Fatalf("root RequestName(%s) = %v, %v", RPMOstreeName, reply, err)
	}
	return f
}

// sendAs runs dbus-send as uid and returns its combined output.
func sendAs(t *testing.T, b *Bus, uid uint32, dest, path, method string, args ...string) (string, error) {
	t.Helper()
	bin, err := exec.LookPath("dbus-send")
	if err != nil {
		t.Fatalf("need dbus-send (Debian package dbus-bin): %v", err)
	}
	cmd := exec.Command(bin, append([]string{"--system", "--print-reply", "--reply-timeout=5000",
		"--dest=" + dest, path, method}, args...)...)
	cmd.Env = []string{b.Env()}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

func TestBus(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("dbusd tests must run as root (they own a name as root and drop to uid 65534)")
	}
	b := startBus(t)
	f := serveSysroot(t, b)

	t.Run("address points at the socket in dir", func(t *testing.T) {
		if !strings.HasPrefix(b.Address(), "unix:path="+b.SocketPath()) {
			t.Errorf("address %q does not name %s", b.Address(), b.SocketPath())
		}
		if fi, err := os.Stat(b.SocketPath()); err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Errorf("socket: %v %v", fi, err)
		}
	})

	t.Run("root may call any Sysroot method", func(t *testing.T) {
		conn, err := dbus.Connect(b.Address())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if err := conn.Object(RPMOstreeName, sysrootPath).Call(sysrootIface+".Reload", 0).Err; err != nil {
			t.Fatalf("root Reload: %v", err)
		}
		t.Logf("method call through the bus: %v", time.Since(start))
		select {
		case <-f.reloads:
		case <-time.After(5 * time.Second):
			t.Fatal("Reload never reached the service")
		}
	})

	t.Run("nobody may call GetOS", func(t *testing.T) {
		out, err := sendAs(t, b, nobodyUID, RPMOstreeName, sysrootPath, sysrootIface+".GetOS", "string:")
		if err != nil || !strings.Contains(out, "/org/projectatomic/rpmostree1/tos") {
			t.Fatalf("GetOS as nobody: %v: %s", err, out)
		}
	})

	t.Run("nobody is denied Reload by the bus", func(t *testing.T) {
		out, err := sendAs(t, b, nobodyUID, RPMOstreeName, sysrootPath, sysrootIface+".Reload")
		if err == nil || !strings.Contains(out, "org.freedesktop.DBus.Error.AccessDenied") ||
			!strings.Contains(out, "Rejected send message") {
			t.Fatalf("Reload as nobody: want AccessDenied, got %v: %s", err, out)
		}
		select {
		case <-f.reloads:
			t.Fatal("denied Reload reached the service")
		default:
		}
	})

	t.Run("nobody may not own the rpm-ostree name", func(t *testing.T) {
		out, err := sendAs(t, b, nobodyUID, "org.freedesktop.DBus", "/org/freedesktop/DBus",
			"org.freedesktop.DBus.RequestName", "string:"+RPMOstreeName, "uint32:4")
		if err == nil || !strings.Contains(out, "AccessDenied") || !strings.Contains(out, "not allowed to own") {
			t.Fatalf("RequestName as nobody: want AccessDenied, got %v: %s", err, out)
		}
	})
}

func TestCloseStopsDaemonAndRemovesFiles(t *testing.T) {
	b := startBus(t)
	pid := b.PID()
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); err == nil {
		t.Errorf("dbus-daemon %d still running after Close", pid)
	}
	for _, p := range []string{b.SocketPath(), b.ConfigPath(), filepath.Join(b.PolicyDir(), RPMOstreePolicyFile)} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind: %v", p, err)
		}
	}
	if _, err := dbus.Connect(b.Address()); err == nil {
		t.Error("connect after Close succeeded")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
