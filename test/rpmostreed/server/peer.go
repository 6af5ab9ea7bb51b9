package server

import (
	"net"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/godbus/dbus/v5/introspect"
	"go.uber.org/zap"
)

const authTimeout = 10 * time.Second

// peer is one p2p connection to a transaction, exporting the Transaction object at "/".
type peer struct {
	t    *txn
	conn *dbus.Conn
}

// accept serves connections until the listener closes.
func (t *txn) accept() {
	for {
		c, err := t.ln.AcceptUnix()
		if err != nil {
			return
		}
		go t.serve(c)
	}
}

func (t *txn) serve(c *net.UnixConn) {
	uid, err := peerUID(c)
	if err == nil {
		_ = c.SetDeadline(time.Now().Add(authTimeout))
		err = serverAuth(c, uid, t.s.guid)
		_ = c.SetDeadline(time.Time{})
	}
	if err != nil {
		t.log.Warn("transaction peer failed to authenticate", zap.Error(err))
		_ = c.Close()
		return
	}
	conn, err := dbus.NewConn(&authShim{Conn: c})
	if err != nil {
		_ = c.Close()
		return
	}
	p := &peer{t: t, conn: conn}
	if err := p.export(); err != nil {
		t.log.Error("exporting transaction object", zap.Error(err))
		_ = conn.Close()
		return
	}
	// Signals may only be emitted once godbus's handshake with the shim is over.
	if err := conn.Auth([]dbus.Auth{dbus.AuthAnonymous()}); err != nil {
		t.log.Warn("starting transaction peer", zap.Error(err))
		_ = conn.Close()
		return
	}
	if !t.addPeer(p) {
		_ = conn.Close()
		return
	}
	<-conn.Context().Done()
	t.dropPeer(p)
}

// addPeer registers p for signals; false when the transaction is already closed.
func (t *txn) addPeer(p *peer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.torndown {
		return false
	}
	t.peers[p] = struct{}{}
	return true
}

func (p *peer) export() error {
	if err := p.conn.Export(txnObject{p}, "/", TxnIface); err != nil {
		return err
	}
	_, err := exportProps(p.conn, "/", map[string]map[string]any{TxnIface: {
		"Title":                       p.t.spec.title,
		"InitiatingClientDescription": p.t.clientDesc,
	}})
	if err != nil {
		return err
	}
	xml := nodeXML([]introspect.Interface{txnInterface}, nil)
	return p.conn.Export(introspector(func() string { return xml }), "/", introspectableIface)
}

// dropPeer forgets a closed peer; the last one to leave a finished transaction closes it.
func (t *txn) dropPeer(p *peer) {
	t.mu.Lock()
	delete(t.peers, p)
	last := t.finished && len(t.peers) == 0
	t.mu.Unlock()
	if last {
		t.teardown("all peers disconnected")
	}
}

func (p *peer) emit(member string, body ...any) {
	if err := p.conn.Emit("/", TxnIface+"."+member, body...); err != nil && err != dbus.ErrClosed {
		p.t.log.Debug("emitting to transaction peer", zap.String("signal", member), zap.Error(err))
	}
}

// txnObject is org.projectatomic.rpmostree1.Transaction on one peer connection.
type txnObject struct{ p *peer }

// Start begins the work. The reply is sent by hand so that ordering is exact: a late Start's
// reply is followed by the replayed Finished on this connection only. The handler then waits
// for the connection to close, so godbus's own reply is dropped.
func (o txnObject) Start(msg dbus.Message) (bool, *dbus.Error) {
	// A Start can be dispatched before serve registered the peer: register it first so the
	// peer that starts the work sees every signal.
	if !o.p.t.addPeer(o.p) {
		_ = o.p.conn.Close()
		return false, nil
	}
	startedNow, replay := o.p.t.start()
	o.reply(msg, startedNow)
	switch {
	case replay:
		o.p.t.mu.Lock()
		success, message := o.p.t.success, o.p.t.message
		o.p.t.mu.Unlock()
		o.p.emit("Finished", success, message)
	case startedNow:
		o.p.t.log.Info("transaction started")
		go o.p.t.run()
	}
	<-o.p.conn.Context().Done()
	return startedNow, nil
}

// Cancel cancels the work and replies at once; Finished(false, …) follows.
func (o txnObject) Cancel() *dbus.Error {
	o.p.t.requestCancel()
	return nil
}

func (o txnObject) reply(call dbus.Message, started bool) {
	if call.Flags&dbus.FlagNoReplyExpected != 0 {
		return
	}
	reply := &dbus.Message{
		Type: dbus.TypeMethodReply,
		Headers: map[dbus.HeaderField]dbus.Variant{
			dbus.FieldReplySerial: dbus.MakeVariant(call.Serial()),
			dbus.FieldSignature:   dbus.MakeVariant(dbus.SignatureOf(started)),
		},
		Body: []any{started},
	}
	if sender, ok := call.Headers[dbus.FieldSender]; ok {
		reply.Headers[dbus.FieldDestination] = sender
	}
	o.p.conn.Send(reply, nil)
}
