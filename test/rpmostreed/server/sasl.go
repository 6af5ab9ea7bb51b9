package server

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
)

// Server side of D-Bus SASL for the p2p transaction socket (reference §11.1, notes §3). godbus
// only implements the client side, so the stand-in authenticates the peer by hand, byte by
// byte so that nothing after BEGIN is consumed, then hands the socket to godbus through
// authShim, which answers godbus's own client-side handshake locally.

const maxAuthLine = 16 * 1024

// newGUID returns 32 hex digits.
func newGUID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("generating guid: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// peerUID reads SO_PEERCRED of a unix connection.
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *syscall.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return cred.Uid, nil
}

// serverAuth runs the EXTERNAL handshake on rw for a peer whose kernel-reported uid is uid.
// It returns nil after BEGIN; rw is then positioned at the first message byte.
func serverAuth(rw io.ReadWriter, uid uint32, guid string) error {
	var nul [1]byte
	if _, err := io.ReadFull(rw, nul[:]); err != nil {
		return fmt.Errorf("reading the leading NUL byte: %w", err)
	}
	if nul[0] != 0 {
		return errors.New("auth: the first byte is not NUL")
	}
	const (
		waitingForAuth = iota
		waitingForData
		waitingForBegin
	)
	state := waitingForAuth
	for {
		line, err := readAuthLine(rw)
		if err != nil {
			return err
		}
		cmd, arg, _ := bytes.Cut(line, []byte(" "))
		var reply string
		switch {
		case string(cmd) == "BEGIN" && state == waitingForBegin:
			return nil
		case string(cmd) == "AUTH" && state == waitingForAuth:
			mech, resp, hasResp := bytes.Cut(arg, []byte(" "))
			switch {
			case string(mech) != "EXTERNAL":
				reply = "REJECTED EXTERNAL"
			case !hasResp:
				state, reply = waitingForData, "DATA"
			case identityMatches(resp, uid):
				state, reply = waitingForBegin, "OK "+guid
			default:
				reply = "REJECTED EXTERNAL"
			}
		case string(cmd) == "DATA" && state == waitingForData:
			if len(arg) == 0 || identityMatches(arg, uid) {
				state, reply = waitingForBegin, "OK "+guid
			} else {
				state, reply = waitingForAuth, "REJECTED EXTERNAL"
			}
		case string(cmd) == "NEGOTIATE_UNIX_FD" && state == waitingForBegin:
			reply = "ERROR Unix fd passing is not supported"
		case string(cmd) == "CANCEL", string(cmd) == "ERROR":
			state, reply = waitingForAuth, "REJECTED EXTERNAL"
		default:
			reply = "ERROR"
		}
		if _, err := io.WriteString(rw, reply+"\r\n"); err != nil {
			return fmt.Errorf("auth reply: %w", err)
		}
	}
}

// identityMatches reports whether hexID (hex of the decimal uid) names uid.
func identityMatches(hexID []byte, uid uint32) bool {
	raw, err := hex.DecodeString(string(hexID))
	if err != nil {
		return false
	}
	claimed, err := strconv.ParseUint(string(raw), 10, 32)
	return err == nil && uint32(claimed) == uid
}

// readAuthLine reads one CRLF-terminated line a byte at a time.
func readAuthLine(r io.Reader) ([]byte, error) {
	var line []byte
	var b [1]byte
	for len(line) < maxAuthLine {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("reading auth line: %w", err)
		}
		line = append(line, b[0])
		if bytes.HasSuffix(line, []byte("\r\n")) {
			return line[:len(line)-2], nil
		}
	}
	return nil, errors.New("auth line too long")
}

// authShim wraps an authenticated connection for dbus.NewConn: until godbus sends BEGIN, its
// writes are answered from a local buffer (REJECTED ANONYMOUS, then OK), afterwards bytes pass
// through to the peer.
type authShim struct {
	net.Conn
	mu      sync.Mutex
	begun   bool
	pending bytes.Buffer
	partial []byte
}

func (s *authShim) Write(p []byte) (int, error) {
	s.mu.Lock()
	if s.begun {
		s.mu.Unlock()
		return s.Conn.Write(p)
	}
	defer s.mu.Unlock()
	s.partial = append(s.partial, p...)
	for {
		i := bytes.Index(s.partial, []byte("\r\n"))
		if i < 0 {
			break
		}
		line := bytes.TrimLeft(s.partial[:i], "\x00")
		s.partial = s.partial[i+2:]
		switch {
		case bytes.Equal(line, []byte("AUTH")):
			s.pending.WriteString("REJECTED ANONYMOUS\r\n")
		case bytes.HasPrefix(line, []byte("AUTH ")):
			s.pending.WriteString("OK 00000000000000000000000000000000\r\n")
		case bytes.Equal(line, []byte("BEGIN")):
			s.begun = true
		default:
			s.pending.WriteString("ERROR\r\n")
		}
	}
	return len(p), nil
}

func (s *authShim) Read(p []byte) (int, error) {
	s.mu.Lock()
	if s.begun && s.pending.Len() == 0 {
		s.mu.Unlock()
		return s.Conn.Read(p)
	}
	defer s.mu.Unlock()
	if s.pending.Len() == 0 {
		return 0, errors.New("auth shim: read before any handshake line")
	}
	return s.pending.Read(p)
}
