package rpmostree

import (
	"context"
	"fmt"
	"sync"

	"github.com/godbus/dbus/v5"
)

// Bus is the part of a system-bus connection the client uses. Every call goes to BusName.
type Bus interface {
	// Call calls method ("interface.Member") on path and returns the reply body.
	Call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) ([]any, error)
	// WatchOwner returns a channel that is closed when the owner of BusName changes after this
	// call (the daemon exited or restarted); stop releases the watch.
	WatchOwner() (lost <-chan struct{}, stop func())
	// Close closes the connection.
	Close() error
}

// godbusBus is Bus on a real godbus connection.
type godbusBus struct {
	conn    *dbus.Conn
	signals chan *dbus.Signal

	mu       sync.Mutex
	nextID   int
	watchers map[int]chan struct{}
}

var _ Bus = (*godbusBus)(nil)

// ConnectSystemBus connects to the system bus (DBUS_SYSTEM_BUS_ADDRESS is honoured).
func ConnectSystemBus() (Bus, error) {
	conn, err := dbus.ConnectSystemBus()
	if err != nil {
		return nil, fmt.Errorf("connecting to the system bus: %w", err)
	}
	return newGodbusBus(conn)
}

// ConnectBus connects to the bus at address (Auth and Hello).
func ConnectBus(address string) (Bus, error) {
	conn, err := dbus.Connect(address)
	if err != nil {
		return nil, fmt.Errorf("connecting to bus %s: %w", address, err)
	}
	return newGodbusBus(conn)
}

func newGodbusBus(conn *dbus.Conn) (*godbusBus, error) {
	b := &godbusBus{conn: conn, signals: make(chan *dbus.Signal, 64), watchers: map[int]chan struct{}{}}
	conn.Signal(b.signals)
	err := conn.AddMatchSignal(
		dbus.WithMatchSender("org.freedesktop.DBus"),
		dbus.WithMatchInterface("org.freedesktop.DBus"),
		dbus.WithMatchMember("NameOwnerChanged"),
		dbus.WithMatchArg(0, BusName),
	)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("watching the owner of %s: %w", BusName, err)
	}
	go b.dispatch()
	return b, nil
}

func (b *godbusBus) dispatch() {
	for sig := range b.signals {
		if sig.Name != "org.freedesktop.DBus.NameOwnerChanged" || len(sig.Body) != 3 {
			continue
		}
		// Only an owner that goes away counts; bus activation (old owner "") does not.
		if name, _ := sig.Body[0].(string); name != BusName {
			continue
		}
		if old, _ := sig.Body[1].(string); old == "" {
			continue
		}
		b.mu.Lock()
		for id, ch := range b.watchers {
			close(ch)
			delete(b.watchers, id)
		}
		b.mu.Unlock()
	}
	// The connection closed: every watcher has lost the daemon.
	b.mu.Lock()
	for id, ch := range b.watchers {
		close(ch)
		delete(b.watchers, id)
	}
	b.watchers = nil
	b.mu.Unlock()
}

func (b *godbusBus) Call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) ([]any, error) {
	call := b.conn.Object(BusName, path).CallWithContext(ctx, method, 0, args...)
	return call.Body, call.Err
}

func (b *godbusBus) WatchOwner() (<-chan struct{}, func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ch := make(chan struct{})
	if b.watchers == nil {
		close(ch)
		return ch, func() {}
	}
	id := b.nextID
	b.nextID++
	b.watchers[id] = ch
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		if w, ok := b.watchers[id]; ok {
			close(w)
			delete(b.watchers, id)
		}
	}
}

func (b *godbusBus) Close() error { return b.conn.Close() }
