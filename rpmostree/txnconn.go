package rpmostree

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// TxnConn is a peer-to-peer connection to one transaction (object "/", no bus name).
type TxnConn interface {
	// Signals delivers every signal of the connection, subscribed before any call; it is
	// closed when the connection closes.
	Signals() <-chan *dbus.Signal
	// Call calls member of the Transaction interface (Start, Cancel).
	Call(ctx context.Context, member string) ([]any, error)
	Close() error
}

// TxnDialer opens a TxnConn to a transaction address returned by a method.
type TxnDialer func(ctx context.Context, address string) (TxnConn, error)

type godbusTxn struct {
	conn    *dbus.Conn
	signals chan *dbus.Signal
}

var _ TxnConn = (*godbusTxn)(nil)

// DialTxn dials address with godbus: Dial, Auth (EXTERNAL), no Hello, and subscribes to signals
// before returning (reference §6 steps 5–6; never AddMatch on a p2p connection).
func DialTxn(ctx context.Context, address string) (TxnConn, error) {
	conn, err := dbus.Dial(address)
	if err != nil {
		return nil, fmt.Errorf("dialing transaction %s: %w", address, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	err = conn.Auth(nil)
	if !stop() || err != nil {
		_ = conn.Close()
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("authenticating to transaction %s: %w", address, err)
	}
	// Buffered generously: godbus blocks its reader while a signal channel is full.
	t := &godbusTxn{conn: conn, signals: make(chan *dbus.Signal, 512)}
	conn.Signal(t.signals)
	return t, nil
}

func (t *godbusTxn) Signals() <-chan *dbus.Signal { return t.signals }

func (t *godbusTxn) Call(ctx context.Context, member string) ([]any, error) {
	call := t.conn.Object("", TxnPath).CallWithContext(ctx, TxnIface+"."+member, 0)
	return call.Body, call.Err
}

func (t *godbusTxn) Close() error { return t.conn.Close() }
