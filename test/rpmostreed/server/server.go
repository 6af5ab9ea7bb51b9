// Package server is the bus side of the rpm-ostreed stand-in: it owns
// org.projectatomic.rpmostree1 on a (private) system bus and exports Sysroot, one OS object per
// stateroot (OS + OSExperimental), an ObjectManager, properties with PropertiesChanged, and
// introspection of every member rpm-ostree declares. Transactions follow rpm-ostree's protocol
// on a p2p unix socket (hand-written server-side SASL, object "/"): join, busy (Code26),
// abandonment, late Start, Cancel, the 30 s force-close, reboot requests. The real work is
// behind Backend.
//
// Fault knobs (for tests and, through the command's control file, for the harness):
// FailNextTransaction, StallTransactions/ReleaseTransactions, CrashDuringNextTransaction and
// FailNextCallsWithNoReply.
package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// Options configure a Server. Zero values take the defaults shown.
type Options struct {
	// BusAddress is the bus to serve on (required), e.g. a private dbus-daemon.
	BusAddress string
	// SysrootPath is reported as Sysroot.Path (default "/").
	SysrootPath string
	// TxnSocket is the path of the p2p transaction socket (default
	// /run/rpm-ostree-transaction.sock). It exists while a transaction is active.
	TxnSocket string
	// RunDir is the node's /run, where the update driver file is written (DriverFile; default:
	// the directory of TxnSocket).
	RunDir string
	// ForceCloseAfter is how long a finished transaction stays active while peers are still
	// connected (default 30s).
	ForceCloseAfter time.Duration
	// AfterFunc schedules f after d and returns its stop function (default time.AfterFunc).
	AfterFunc func(d time.Duration, f func()) (stop func() bool)
	// AutomaticUpdatePolicy is Sysroot.AutomaticUpdatePolicy (default "none").
	AutomaticUpdatePolicy string
	// Exit ends the process for CrashDuringNextTransaction (default os.Exit).
	Exit func(code int)
	// Log receives structured logs (default: none).
	Log *zap.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.BusAddress == "" {
		return o, errors.New("server: BusAddress is required")
	}
	if o.SysrootPath == "" {
		o.SysrootPath = "/"
	}
	if o.TxnSocket == "" {
		o.TxnSocket = DefaultTxnSocketPath
	}
	if o.RunDir == "" {
		o.RunDir = filepath.Dir(o.TxnSocket)
	}
	if o.ForceCloseAfter <= 0 {
		o.ForceCloseAfter = 30 * time.Second
	}
	if o.AfterFunc == nil {
		o.AfterFunc = func(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }
	}
	if o.AutomaticUpdatePolicy == "" {
		o.AutomaticUpdatePolicy = "none"
	}
	if o.Exit == nil {
		o.Exit = os.Exit
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	return o, nil
}

// Server is a running stand-in.
type Server struct {
	opts    Options
	backend Backend
	log     *zap.Logger
	conn    *dbus.Conn
	guid    string
	ctx     context.Context
	stop    context.CancelFunc
	faults  faults

	sysrootProps *props
	stateMu      sync.Mutex // serializes refresh

	mu        sync.Mutex
	oses      map[string]*osObject // by stateroot
	clients   map[string]string    // unique name → RegisterClient id
	active    *txn
	rebooting bool
	reboots   int
	closed    bool
}

// Start connects to the bus, exports the objects, and takes the well-known name.
func Start(ctx context.Context, backend Backend, opts Options) (_ *Server, err error) {
	if backend == nil {
		return nil, errors.New("server: nil Backend")
	}
	if opts, err = opts.withDefaults(); err != nil {
		return nil, err
	}
	guid, err := newGUID()
	if err != nil {
		return nil, err
	}
	conn, err := dbus.Connect(opts.BusAddress)
	if err != nil {
		return nil, fmt.Errorf("server: connecting to %s: %w", opts.BusAddress, err)
	}
	sctx, stop := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, backend: backend, log: opts.Log.With(zap.String("component", "rpm-ostreed")),
		conn: conn, guid: guid, ctx: sctx, stop: stop,
		oses: map[string]*osObject{}, clients: map[string]string{},
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()
	if err := s.exportStatic(); err != nil {
		return nil, fmt.Errorf("server: exporting objects: %w", err)
	}
	if err := s.refresh(ctx); err != nil {
		return nil, fmt.Errorf("server: reading deployments: %w", err)
	}
	if err := s.watchNames(); err != nil {
		return nil, fmt.Errorf("server: watching bus names: %w", err)
	}
	reply, err := conn.RequestName(BusName, dbus.NameFlagDoNotQueue)
	if err != nil {
		return nil, fmt.Errorf("server: requesting %s: %w", BusName, err)
	}
	if reply != dbus.RequestNameReplyPrimaryOwner {
		return nil, fmt.Errorf("server: %s is owned by someone else (reply %d)", BusName, reply)
	}
	s.log.Info("serving", zap.String("bus", opts.BusAddress), zap.String("txn_socket", opts.TxnSocket))
	return s, nil
}

// Close leaves the bus and drops any active transaction (without Finished).
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	active := s.active
	s.mu.Unlock()
	if active != nil {
		active.teardown("server closing")
	}
	s.stop()
	return s.conn.Close()
}

// Reboots counts the reboot requests recorded (reboot: true, FinalizeDeployment).
func (s *Server) Reboots() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reboots
}

// Rebooting reports whether a reboot was requested; new transactions then fail with Code0.
func (s *Server) Rebooting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rebooting
}

// BootCompleted clears the rebooting state (for a harness that keeps the server across a
// simulated reboot) and reloads the deployments.
func (s *Server) BootCompleted(ctx context.Context) error {
	s.mu.Lock()
	s.rebooting = false
	s.mu.Unlock()
	return s.refresh(ctx)
}

// markRebooting records a reboot request; false if one is already under way.
func (s *Server) markRebooting() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reboots++
	if s.rebooting {
		return false
	}
	s.rebooting = true
	return true
}

// reboot calls the backend's reboot hook once Finished went out.
func (s *Server) reboot() {
	s.log.Info("reboot requested")
	go func() {
		if err := s.backend.Reboot(s.ctx); err != nil {
			s.log.Error("reboot hook", zap.Error(err))
		}
	}()
}

func (s *Server) setActiveTransaction(method, sender, osPath, address string) {
	s.sysrootProps.update(SysrootIface, map[string]any{
		"ActiveTransaction":     activeTxn{method, sender, osPath},
		"ActiveTransactionPath": address,
	})
}

// clearActive forgets t if it is the active transaction.
func (s *Server) clearActive(t *txn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active != t {
		return
	}
	s.active = nil
	if !s.closed {
		s.setActiveTransaction("", "", "", "")
	}
}

// activeTxn is the (sss) of Sysroot.ActiveTransaction.
type activeTxn struct{ Method, Sender, Path string }
