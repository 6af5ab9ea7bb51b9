package systemd_test

import (
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/systemd"
)

func TestNotifier(t *testing.T) {
	t.Run("is_a_no_op_without_NOTIFY_SOCKET", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if err := (systemd.Notifier{}).Ready(); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("sends_READY_and_STATUS_to_the_notify_socket", func(t *testing.T) {
		sock := filepath.Join(t.TempDir(), "notify")
		conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		t.Setenv("NOTIFY_SOCKET", sock)
		n := systemd.Notifier{}
		if err := n.Ready(); err != nil {
			t.Fatal(err)
		}
		if err := n.Status("Staging sha256:ab"); err != nil {
			t.Fatal(err)
		}
		var got []string
		buf := make([]byte, 512)
		for range 2 {
			_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			k, _, err := conn.ReadFromUnix(buf)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, string(buf[:k]))
		}
		if strings.Join(got, "|") != "READY=1|STATUS=Staging sha256:ab" {
			t.Fatalf("got %q", got)
		}
	})
}
