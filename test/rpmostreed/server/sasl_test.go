package server

import (
	"bufio"
	"encoding/hex"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
)

func hexUID(uid string) string { return hex.EncodeToString([]byte(uid)) }

// converse runs serverAuth for uid against scripted client lines and returns the replies.
func converse(t *testing.T, uid uint32, lines []string) ([]string, error) {
	t.Helper()
	client, srv := net.Pipe()
	defer client.Close()
	done := make(chan error, 1)
	go func() { done <- serverAuth(srv, uid, "0123456789abcdef0123456789abcdef"); _ = srv.Close() }()
	r := bufio.NewReader(client)
	if _, err := client.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	var replies []string
	for _, l := range lines {
		if _, err := client.Write([]byte(l + "\r\n")); err != nil {
			t.Fatal(err)
		}
		if l == "BEGIN" {
			break
		}
		_ = client.SetReadDeadline(time.Now().Add(2 * time.Second))
		reply, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("after %q: %v", l, err)
		}
		replies = append(replies, strings.TrimSuffix(reply, "\r\n"))
	}
	return replies, <-done
}

func TestServerAuth(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lines []string
		want  []string
	}{
		{"godbus_flow_with_unix_fd_negotiation",
			[]string{"AUTH", "AUTH EXTERNAL " + hexUID("0"), "NEGOTIATE_UNIX_FD", "BEGIN"},
			[]string{"REJECTED EXTERNAL", "OK 0123456789abcdef0123456789abcdef", "ERROR Unix fd passing is not supported"}},
		{"glib_flow_with_empty_external_then_data",
			[]string{"AUTH EXTERNAL", "DATA", "BEGIN"},
			[]string{"DATA", "OK 0123456789abcdef0123456789abcdef"}},
		{"data_with_the_uid",
			[]string{"AUTH EXTERNAL", "DATA " + hexUID("0"), "BEGIN"},
			[]string{"DATA", "OK 0123456789abcdef0123456789abcdef"}},
		{"anonymous_and_cookie_are_refused",
			[]string{"AUTH ANONYMOUS 6c61796572", "AUTH DBUS_COOKIE_SHA1 30", "AUTH EXTERNAL " + hexUID("0"), "BEGIN"},
			[]string{"REJECTED EXTERNAL", "REJECTED EXTERNAL", "OK 0123456789abcdef0123456789abcdef"}},
		{"a_foreign_uid_is_rejected",
			[]string{"AUTH EXTERNAL " + hexUID("1000"), "CANCEL", "AUTH EXTERNAL " + hexUID("0"), "BEGIN"},
			[]string{"REJECTED EXTERNAL", "REJECTED EXTERNAL", "OK 0123456789abcdef0123456789abcdef"}},
		{"begin_before_ok_is_an_error",
			[]string{"BEGIN x", "NEGOTIATE_UNIX_FD", "AUTH EXTERNAL " + hexUID("0"), "BEGIN"},
			[]string{"ERROR", "ERROR", "OK 0123456789abcdef0123456789abcdef"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := converse(t, 0, tc.lines)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("replies %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("rejects_a_missing_nul_byte", func(t *testing.T) {
		client, srv := net.Pipe()
		defer client.Close()
		go func() { _, _ = client.Write([]byte("AUTH\r\n")) }()
		if err := serverAuth(srv, 0, "g"); err == nil {
			t.Fatal("no error")
		}
	})
}

// The shim lets godbus run its client handshake against nothing and then passes bytes through.
func TestAuthShim(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	conn, err := dbus.NewConn(&authShim{Conn: a})
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Auth([]dbus.Auth{dbus.AuthAnonymous()}); err != nil {
		t.Fatalf("godbus handshake against the shim: %v", err)
	}
	go func() { _ = conn.Emit("/", TxnIface+".Message", "hello") }()
	msg, err := dbus.DecodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if msg.Type != dbus.TypeSignal || len(msg.Body) != 1 || msg.Body[0] != "hello" {
		t.Fatalf("passed through %v", msg)
	}
}
