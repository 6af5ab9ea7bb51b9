package rpmostree_test

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/rpmostree"
)

// fakeDaemon is a scripted rpm-ostreed behind rpmostree.Bus and rpmostree.TxnDialer.
type fakeDaemon struct {
	mu      sync.Mutex
	calls   []fakeCall
	sysroot map[string]dbus.Variant
	os      map[string]dbus.Variant
	// noReply makes the next n calls fail with NoReply.
	noReply int
	// txnErrs are returned by the next transaction method calls, in order.
	txnErrs []error
	// script is emitted on Start; onCancel on Cancel.
	script   []*dbus.Signal
	onCancel []*dbus.Signal
	// dropAfterScript closes the connection after the script (daemon crash).
	dropAfterScript bool
	lost            chan struct{}
	txns            []*fakeTxn
	// onTxn runs (under the lock) when a transaction method is called.
	onTxn func()
}

type fakeCall struct {
	Path   dbus.ObjectPath
	Method string
	Args   []any
}

var (
	_ rpmostree.Bus     = (*fakeDaemon)(nil)
	_ rpmostree.TxnConn = (*fakeTxn)(nil)
)

const fakeOSPath = dbus.ObjectPath("/org/projectatomic/rpmostree1/fedora")

func newFakeDaemon(deployments []map[string]dbus.Variant, booted, def, rollback map[string]dbus.Variant) *fakeDaemon {
	return &fakeDaemon{
		lost: make(chan struct{}),
		sysroot: map[string]dbus.Variant{
			"Path":                  dbus.MakeVariant("/"),
			"Booted":                dbus.MakeVariant(fakeOSPath),
			"Deployments":           dbus.MakeVariant(deployments),
			"ActiveTransaction":     dbus.MakeVariant([]any{"", "", ""}),
			"ActiveTransactionPath": dbus.MakeVariant(""),
		},
		os: map[string]dbus.Variant{
			"Name":               dbus.MakeVariant("fedora"),
			"BootedDeployment":   dbus.MakeVariant(booted),
			"DefaultDeployment":  dbus.MakeVariant(def),
			"RollbackDeployment": dbus.MakeVariant(rollback),
		},
	}
}

func (f *fakeDaemon) Call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) ([]any, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fakeCall{path, method, args})
	if f.noReply > 0 {
		f.noReply--
		return nil, dbus.Error{Name: "org.freedesktop.DBus.Error.NoReply", Body: []any{"no reply"}}
	}
	switch method {
	case "org.projectatomic.rpmostree1.Sysroot.RegisterClient",
		"org.projectatomic.rpmostree1.Sysroot.UnregisterClient",
		"org.projectatomic.rpmostree1.Sysroot.Reload":
		return nil, nil
	case "org.projectatomic.rpmostree1.Sysroot.GetOS":
		return []any{fakeOSPath}, nil
	case "org.freedesktop.DBus.Properties.GetAll":
		if args[0] == rpmostree.SysrootIface {
			return []any{f.sysroot}, nil
		}
		return []any{f.os}, nil
	case "org.freedesktop.DBus.Properties.Get":
		if args[0] == rpmostree.SysrootIface {
			return []any{f.sysroot[args[1].(string)]}, nil
		}
		return []any{f.os[args[1].(string)]}, nil
	}
	if path == fakeOSPath {
		if f.onTxn != nil {
			f.onTxn()
		}
		if len(f.txnErrs) > 0 {
			err := f.txnErrs[0]
			f.txnErrs = f.txnErrs[1:]
			return nil, err
		}
		return []any{fmt.Sprintf("unix:path=/fake/txn%d", len(f.txns))}, nil
	}
	return nil, fmt.Errorf("fake: unexpected call %s", method)
}

func (f *fakeDaemon) WatchOwner() (<-chan struct{}, func()) { return f.lost, func() {} }
func (f *fakeDaemon) Close() error                          { return nil }

func (f *fakeDaemon) dial(ctx context.Context, address string) (rpmostree.TxnConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTxn{d: f, address: address, sigs: make(chan *dbus.Signal, 64)}
	f.txns = append(f.txns, t)
	return t, nil
}

func (f *fakeDaemon) callsTo(method string) []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeCall
	for _, c := range f.calls {
		if c.Method == method {
			out = append(out, c)
		}
	}
	return out
}

type fakeTxn struct {
	d       *fakeDaemon
	address string
	mu      sync.Mutex
	sigs    chan *dbus.Signal
	closed  bool
	calls   []string
}

func (t *fakeTxn) Signals() <-chan *dbus.Signal { return t.sigs }

func (t *fakeTxn) Call(ctx context.Context, member string) ([]any, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.calls = append(t.calls, member)
	switch member {
	case "Start":
		t.emit(t.d.script)
		if t.d.dropAfterScript {
			t.closeLocked()
		}
		return []any{true}, nil
	case "Cancel":
		t.emit(t.d.onCancel)
		return nil, nil
	}
	return nil, fmt.Errorf("fake txn: unknown member %s", member)
}

func (t *fakeTxn) emit(sigs []*dbus.Signal) {
	for _, s := range sigs {
		if !t.closed {
			t.sigs <- s
		}
	}
}

func (t *fakeTxn) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closeLocked()
	return nil
}

func (t *fakeTxn) closeLocked() {
	if !t.closed {
		t.closed = true
		close(t.sigs)
	}
}

func (t *fakeTxn) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

func sig(member string, body ...any) *dbus.Signal {
	return &dbus.Signal{Path: "/", Name: rpmostree.TxnIface + "." + member, Body: body}
}

// fakeClock fires every After at once and records the waits.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits []time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

const (
	digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	digestB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func containerDeployment(serial int32, digest string, booted, staged bool) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"id":                               dbus.MakeVariant(fmt.Sprintf("fedora-c%d.%d", serial, serial)),
		"osname":                           dbus.MakeVariant("fedora"),
		"checksum":                         dbus.MakeVariant(fmt.Sprintf("c%d", serial)),
		"serial":                           dbus.MakeVariant(serial),
		"booted":                           dbus.MakeVariant(booted),
		"staged":                           dbus.MakeVariant(staged),
		"pinned":                           dbus.MakeVariant(false),
		"unlocked":                         dbus.MakeVariant("none"),
		"timestamp":                        dbus.MakeVariant(uint64(1700000000)),
		"version":                          dbus.MakeVariant("42.1"),
		"container-image-reference":        dbus.MakeVariant("ostree-unverified-registry:quay.io/org/os@" + digest),
		"container-image-reference-digest": dbus.MakeVariant(digest),
	}
}

// stillClock never fires: waits last until something else happens.
type stillClock struct{}

func (stillClock) Now() time.Time                       { return time.Unix(0, 0) }
func (stillClock) After(time.Duration) <-chan time.Time { return nil }
