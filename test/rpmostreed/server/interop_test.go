package server_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A non-godbus client (libdbus' dbus-send, as the reference verified) authenticates on the
// transaction socket and starts the transaction.
func TestDbusSendStartsATransaction(t *testing.T) {
	bin, err := exec.LookPath("dbus-send")
	if err != nil {
		t.Fatalf("need dbus-send (Debian package dbus-bin): %v", err)
	}
	w := startWorld(t)
	conn := w.raw(t)
	addr, err := callOS(conn, "Rebase", opts(), refspec(digestB), []string{})
	if err != nil {
		t.Fatal(err)
	}
	watcher := dialPeer(t, addr)
	out, err := exec.Command(bin, "--peer="+addr, "--print-reply", "/", "org.projectatomic.rpmostree1.Transaction.Start").CombinedOutput()
	if err != nil {
		t.Fatalf("dbus-send: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "boolean true") {
		t.Fatalf("dbus-send output: %s", out)
	}
	if ok, msg, _ := watcher.finished(t); !ok {
		t.Fatalf("Finished(false, %q)", msg)
	}
}
