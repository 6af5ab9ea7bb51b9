package server

import (
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"sync"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// txnSpec is what an OS method asks for: the work and the identity used to join or refuse.
type txnSpec struct {
	method string          // D-Bus member, e.g. "Rebase"
	sender string          // caller's unique name
	osPath dbus.ObjectPath // the OS object called
	args   []any           // decoded arguments: an identical call joins
	title  string
	reboot bool // request a reboot after success
	work   func(ctx context.Context, p Progress) error
}

// txn is one transaction (reference §6): a p2p listener, the peers connected to it, and the
// state Start/Cancel/Finished move through.
type txn struct {
	s          *Server
	spec       txnSpec
	address    string
	clientDesc string
	ln         *net.UnixListener
	ctx        context.Context
	cancel     context.CancelFunc
	log        *zap.Logger

	mu              sync.Mutex
	peers           map[*peer]struct{}
	started         bool
	finished        bool
	success         bool
	message         string
	cancelRequested bool
	torndown        bool
	stopTimer       func() bool
}

// begin creates a transaction for spec or joins/refuses as rpm-ostree does (reference §6 step 3).
func (s *Server) begin(spec txnSpec) (string, *dbus.Error) {
	if err := s.takeNoReply(); err != nil {
		return "", err
	}
	desc := s.clientDescription(spec.sender)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rebooting {
		return "", failedError(msgRebootInitiated)
	}
	if a := s.active; a != nil {
		if a.spec.method == spec.method && reflect.DeepEqual(a.spec.args, spec.args) {
			s.log.Info("joining identical transaction", zap.String("method", spec.method), zap.String("sender", spec.sender))
			return a.address, nil
		}
		return "", busyError(a.spec.title)
	}
	t, err := s.newTxn(spec, desc)
	if err != nil {
		s.log.Error("creating transaction", zap.Error(err))
		return "", dbus.MakeFailedError(err)
	}
	s.active = t
	s.setActiveTransaction(spec.method, spec.sender, string(spec.osPath), t.address)
	go t.accept()
	t.log.Info("transaction created", zap.String("title", spec.title))
	return t.address, nil
}

func (s *Server) newTxn(spec txnSpec, clientDesc string) (*txn, error) {
	path := s.opts.TxnSocket
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o666); err != nil {
		_ = ln.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(s.ctx)
	address := "unix:path=" + dbus.EscapeBusAddressValue(path)
	return &txn{
		s: s, spec: spec, address: address, ln: ln, ctx: ctx, cancel: cancel,
		clientDesc: clientDesc,
		log:        s.log.With(zap.String("txn", spec.method), zap.String("sender", spec.sender)),
		peers:      map[*peer]struct{}{},
	}, nil
}

// start is Start from a peer: it reports whether this call started the work and whether the
// work already ended (then Finished is replayed to that peer only).
func (t *txn) start() (startedNow, replay bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.finished:
		return false, true
	case t.started:
		return false, false
	}
	t.started = true
	return true, false
}

// requestCancel is Cancel from a peer.
func (t *txn) requestCancel() {
	t.mu.Lock()
	done := t.finished
	if !done {
		t.cancelRequested = true
	}
	t.mu.Unlock()
	if !done {
		t.log.Info("transaction cancel requested")
		t.cancel()
	}
}

// run does the work and finishes the transaction.
func (t *txn) run() {
	var err error
	if t.ctx.Err() == nil {
		err = t.s.runWork(t.ctx, t.spec.work, progress{t})
	}
	t.mu.Lock()
	cancelled := t.cancelRequested
	t.mu.Unlock()
	success, msg := err == nil && !cancelled, ""
	switch {
	case cancelled:
		msg = msgOperationCancelled
	case err != nil:
		msg = err.Error()
	}
	// The daemon reloads before Finished: properties are current when clients see it.
	if rerr := t.s.refresh(t.s.ctx); rerr != nil {
		t.log.Error("reloading after transaction", zap.Error(rerr))
	}
	rebooting := success && t.spec.reboot && t.s.markRebooting()
	t.finish(success, msg)
	if rebooting {
		t.s.reboot()
	}
}

func (t *txn) finish(success bool, msg string) {
	t.mu.Lock()
	t.finished, t.success, t.message = true, success, msg
	peers := t.peerList()
	if len(peers) > 0 {
		// Peers that stay connected keep the transaction active for ForceCloseAfter at most.
		t.stopTimer = t.s.opts.AfterFunc(t.s.opts.ForceCloseAfter, func() { t.teardown("force-close timer") })
	}
	t.mu.Unlock()
	t.log.Info("transaction finished", zap.Bool("success", success), zap.String("message", msg))
	for _, p := range peers {
		p.emit("Finished", success, msg)
	}
	if len(peers) == 0 {
		t.teardown("no peers at the end")
	}
}

// emit sends a signal to every connected peer.
func (t *txn) emit(member string, body ...any) {
	t.mu.Lock()
	peers := t.peerList()
	t.mu.Unlock()
	for _, p := range peers {
		p.emit(member, body...)
	}
}

func (t *txn) peerList() []*peer {
	out := make([]*peer, 0, len(t.peers))
	for p := range t.peers {
		out = append(out, p)
	}
	return out
}

// abandonIfCaller drops the transaction when its caller left the bus before any Start.
func (t *txn) abandonIfCaller(name string) {
	t.mu.Lock()
	abandon := t.spec.sender == name && !t.started
	t.mu.Unlock()
	if abandon {
		t.log.Info("client disconnected before calling Start; cancelling transaction")
		t.cancel()
		t.teardown("abandoned")
	}
}

// teardown closes the listener and every peer and clears the active transaction.
func (t *txn) teardown(why string) {
	t.mu.Lock()
	if t.torndown {
		t.mu.Unlock()
		return
	}
	t.torndown = true
	if t.stopTimer != nil {
		t.stopTimer()
	}
	peers := t.peerList()
	t.mu.Unlock()
	t.log.Info("transaction closed", zap.String("why", why))
	_ = t.ln.Close()
	for _, p := range peers {
		_ = p.conn.Close()
	}
	t.cancel()
	t.s.clearActive(t)
}

// progress is the Progress a backend writes to.
type progress struct{ t *txn }

var _ Progress = progress{}

func (p progress) Message(text string)   { p.t.emit("Message", text) }
func (p progress) TaskBegin(text string) { p.t.emit("TaskBegin", text) }
func (p progress) TaskEnd(text string)   { p.t.emit("TaskEnd", text) }
func (p progress) ProgressEnd()          { p.t.emit("ProgressEnd") }
func (p progress) PercentProgress(text string, percent uint32) {
	p.t.emit("PercentProgress", text, percent)
}

type (
	pairT struct{ A, B uint64 }
	pairU struct{ A, B uint32 }
	tripU struct{ A, B, C uint32 }
	delta struct {
		A, B, C uint32
		D       uint64
	}
)

func (p progress) DownloadProgress(d DownloadProgress) {
	p.t.emit("DownloadProgress",
		pairT{d.Start, d.Elapsed},
		pairU{d.OutstandingFetches, d.OutstandingWrites},
		tripU{d.MetadataScanned, d.MetadataFetched, d.MetadataOutstanding},
		delta{d.DeltaTotalParts, d.DeltaFetchedParts, d.DeltaTotalSuperblocks, d.DeltaTotalSize},
		pairU{d.ContentFetched, d.ContentRequested},
		pairT{d.Bytes, d.BytesPerSecond},
	)
}
