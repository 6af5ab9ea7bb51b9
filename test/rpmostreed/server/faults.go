package server

import (
	"context"
	"errors"
	"sync"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// faults are the fault knobs of the stand-in.
type faults struct {
	mu        sync.Mutex
	failNext  *string
	stall     chan struct{} // non-nil while stalling; closed on release
	crashNext bool
	noReply   int
}

// FailNextCallsWithNoReply makes the next n method calls on Sysroot and OS objects fail with
// org.freedesktop.DBus.Error.NoReply, as calls do that land while rpm-ostreed exits idle.
func (s *Server) FailNextCallsWithNoReply(n int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.noReply = n
}

// takeNoReply consumes one NoReply fault, if any.
func (s *Server) takeNoReply() *dbus.Error {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if s.faults.noReply == 0 {
		return nil
	}
	s.faults.noReply--
	return dbus.NewError("org.freedesktop.DBus.Error.NoReply", []any{"Message recipient disconnected from message bus without replying"})
}

// FailNextTransaction makes the next transaction's work fail: Finished(false, message).
func (s *Server) FailNextTransaction(message string) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.failNext = &message
}

// StallTransactions makes transactions wait, after Start and before their work, until
// ReleaseTransactions (Cancel still ends them).
func (s *Server) StallTransactions() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if s.faults.stall == nil {
		s.faults.stall = make(chan struct{})
	}
}

// ReleaseTransactions lets stalled transactions continue.
func (s *Server) ReleaseTransactions() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	if s.faults.stall != nil {
		close(s.faults.stall)
		s.faults.stall = nil
	}
}

// CrashDuringNextTransaction makes the next transaction crash the daemon after Start: the bus
// name and every transaction connection drop without Finished, then Options.Exit(70) runs.
func (s *Server) CrashDuringNextTransaction() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.crashNext = true
}

// runWork runs a transaction's work through the fault knobs.
func (s *Server) runWork(ctx context.Context, work func(context.Context, Progress) error, p Progress) error {
	s.faults.mu.Lock()
	crash, stall, fail := s.faults.crashNext, s.faults.stall, s.faults.failNext
	s.faults.crashNext, s.faults.failNext = false, nil
	s.faults.mu.Unlock()
	if crash {
		s.crash()
		return errors.New("rpm-ostreed stand-in crashed (fault injection)")
	}
	if stall != nil {
		s.log.Info("transaction stalled (fault injection)")
		select {
		case <-stall:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fail != nil {
		return errors.New(*fail)
	}
	return work(ctx, p)
}

// crash drops the bus connection and every transaction connection at once, then exits.
func (s *Server) crash() {
	s.log.Warn("crashing (fault injection)")
	s.mu.Lock()
	s.closed = true
	active := s.active
	s.mu.Unlock()
	_ = s.conn.Close()
	if active != nil {
		active.mu.Lock()
		peers := active.peerList()
		active.torndown = true
		active.mu.Unlock()
		_ = active.ln.Close()
		for _, p := range peers {
			_ = p.conn.Close()
		}
	}
	s.stop()
	_ = s.log.Sync() // best effort before exiting
	s.opts.Exit(70)
	s.log.Info("exit hook returned", zap.String("note", "in-process crash simulation"))
}
