package rpmostree

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// Clock is the time source of the client (busy backoff, cancel wait).
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options configure a Client. Zero values take the defaults shown.
type Options struct {
	// ClientID is sent to RegisterClient as "id" (default "layerd").
	ClientID string
	// OSName selects the OS object through GetOS(OSName); "" means the booted one.
	OSName string
	// Log receives structured logs (default: none).
	Log *zap.Logger
	// BusyTimeout bounds how long a transaction method is retried while the daemon is busy
	// (default 5m; negative: fail at the first busy answer). The context may end it sooner.
	BusyTimeout time.Duration
	// BusyBackoff is the first wait after a busy answer (default 1s); it doubles up to
	// BusyBackoffMax (default 30s).
	BusyBackoff    time.Duration
	BusyBackoffMax time.Duration
	// CancelWait bounds the wait for Finished after the context ended and Cancel was sent
	// (default 30s).
	CancelWait time.Duration
	// NoReplyRetries is how often a call that got NoReply (daemon idle exit) is repeated
	// (default 5).
	NoReplyRetries int
	// Dial opens transaction connections (default DialTxn).
	Dial TxnDialer
	// Clock is the time source (default the real clock).
	Clock Clock
}

func (o Options) withDefaults() Options {
	if o.ClientID == "" {
		o.ClientID = "layerd"
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.BusyTimeout == 0 {
		o.BusyTimeout = 5 * time.Minute
	}
	if o.BusyBackoff <= 0 {
		o.BusyBackoff = time.Second
	}
	if o.BusyBackoffMax <= 0 {
		o.BusyBackoffMax = 30 * time.Second
	}
	if o.CancelWait <= 0 {
		o.CancelWait = 30 * time.Second
	}
	if o.NoReplyRetries <= 0 {
		o.NoReplyRetries = 5
	}
	if o.Dial == nil {
		o.Dial = DialTxn
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	return o
}

// Client talks to rpm-ostreed. It is safe for concurrent use, but rpm-ostree runs one
// transaction at a time: concurrent operations get (and retry) ErrBusy.
type Client struct {
	bus  Bus
	opts Options
	log  *zap.Logger

	mu     sync.Mutex
	osPath dbus.ObjectPath
}

// New connects to the system bus and registers as a client.
func New(ctx context.Context, opts Options) (*Client, error) {
	bus, err := ConnectSystemBus()
	if err != nil {
		return nil, err
	}
	return NewWithBus(ctx, bus, opts)
}

// NewWithAddress connects to the bus at address and registers as a client.
func NewWithAddress(ctx context.Context, address string, opts Options) (*Client, error) {
	bus, err := ConnectBus(address)
	if err != nil {
		return nil, err
	}
	return NewWithBus(ctx, bus, opts)
}

// NewWithBus registers as a client on bus, which the Client then owns (Close closes it).
func NewWithBus(ctx context.Context, bus Bus, opts Options) (*Client, error) {
	if bus == nil {
		return nil, errors.New("rpmostree: nil Bus")
	}
	c := &Client{bus: bus, opts: opts.withDefaults()}
	c.log = c.opts.Log.With(zap.String("component", "rpmostree"))
	reg := map[string]dbus.Variant{"id": dbus.MakeVariant(c.opts.ClientID)}
	if _, err := c.call(ctx, SysrootPath, SysrootIface+".RegisterClient", reg); err != nil {
		_ = bus.Close()
		return nil, fmt.Errorf("registering rpm-ostree client %q: %w", c.opts.ClientID, err)
	}
	return c, nil
}

// Close unregisters the client and closes the bus connection.
func (c *Client) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, uerr := c.call(ctx, SysrootPath, SysrootIface+".UnregisterClient", map[string]dbus.Variant{})
	if uerr != nil {
		uerr = fmt.Errorf("unregistering rpm-ostree client: %w", uerr)
	}
	return errors.Join(uerr, c.bus.Close())
}

// call is a bus call repeated at once on NoReply (the daemon was caught during idle exit).
func (c *Client) call(ctx context.Context, path dbus.ObjectPath, method string, args ...any) ([]any, error) {
	var (
		body []any
		err  error
	)
	for attempt := 0; attempt <= c.opts.NoReplyRetries; attempt++ {
		body, err = c.bus.Call(ctx, path, method, args...)
		if err == nil || !isNoReply(err) || ctx.Err() != nil {
			break
		}
		c.log.Debug("no reply from rpm-ostree, retrying", zap.String("method", method), zap.Int("attempt", attempt+1))
	}
	return body, err
}

// Reload asks the daemon to reload the sysroot; it is a barrier before reading properties.
func (c *Client) Reload(ctx context.Context) error {
	if _, err := c.call(ctx, SysrootPath, SysrootIface+".Reload"); err != nil {
		return fmt.Errorf("reloading rpm-ostree sysroot: %w", err)
	}
	return nil
}

// OSPath finds the OS object with GetOS (Options.OSName, "" for the booted one) and caches it.
func (c *Client) OSPath(ctx context.Context) (dbus.ObjectPath, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.osPath != "" {
		return c.osPath, nil
	}
	body, err := c.call(ctx, SysrootPath, SysrootIface+".GetOS", c.opts.OSName)
	if err != nil {
		return "", fmt.Errorf("finding rpm-ostree OS object %q: %w", c.opts.OSName, err)
	}
	var path dbus.ObjectPath
	if err := dbus.Store(body, &path); err != nil {
		return "", fmt.Errorf("GetOS reply: %w", err)
	}
	if path == "/" || path == "" {
		return "", errors.New("rpm-ostree reports no booted OS; set Options.OSName")
	}
	c.osPath = path
	return path, nil
}

func (c *Client) getAll(ctx context.Context, path dbus.ObjectPath, iface string) (map[string]dbus.Variant, error) {
	body, err := c.call(ctx, path, propertiesFace+".GetAll", iface)
	if err != nil {
		return nil, fmt.Errorf("reading %s properties: %w", iface, err)
	}
	var props map[string]dbus.Variant
	if err := dbus.Store(body, &props); err != nil {
		return nil, fmt.Errorf("reading %s properties: %w", iface, err)
	}
	return props, nil
}

func (c *Client) getProperty(ctx context.Context, path dbus.ObjectPath, iface, name string) (dbus.Variant, error) {
	body, err := c.call(ctx, path, propertiesFace+".Get", iface, name)
	if err != nil {
		return dbus.Variant{}, fmt.Errorf("reading %s.%s: %w", iface, name, err)
	}
	var v dbus.Variant
	if err := dbus.Store(body, &v); err != nil {
		return dbus.Variant{}, fmt.Errorf("reading %s.%s: %w", iface, name, err)
	}
	return v, nil
}
