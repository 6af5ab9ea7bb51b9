package rpmostree

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
	"go.uber.org/zap"
)

// startTxn calls a transaction method and returns its address. Busy answers are retried with
// doubling backoff until Options.BusyTimeout; NoReply answers at once.
func (c *Client) startTxn(ctx context.Context, method string, args ...any) (string, error) {
	osPath, err := c.OSPath(ctx)
	if err != nil {
		return "", err
	}
	deadline := c.opts.Clock.Now().Add(c.opts.BusyTimeout)
	wait := c.opts.BusyBackoff
	for {
		body, err := c.call(ctx, osPath, OSIface+"."+method, args...)
		if err == nil {
			var address string
			if err := dbus.Store(body, &address); err != nil {
				return "", fmt.Errorf("%s reply: %w", method, err)
			}
			return address, nil
		}
		err = classifyCallError(method, err)
		if !errors.Is(err, ErrBusy) || c.opts.BusyTimeout < 0 || c.opts.Clock.Now().Add(wait).After(deadline) {
			return "", err
		}
		c.log.Info("rpm-ostree busy, retrying", zap.String("method", method), zap.Duration("wait", wait), zap.Error(err))
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (while waiting: %w)", ctx.Err(), err)
		case <-c.opts.Clock.After(wait):
		}
		wait = min(2*wait, c.opts.BusyBackoffMax)
	}
}

// runTxn starts a transaction and follows it to the end, then reloads the sysroot.
func (c *Client) runTxn(ctx context.Context, method string, progress ProgressFunc, args ...any) error {
	address, err := c.startTxn(ctx, method, args...)
	if err != nil {
		return err
	}
	if err := c.follow(ctx, method, address, progress); err != nil {
		return err
	}
	return c.Reload(ctx)
}

// Attach follows an existing transaction (Sysroot.ActiveTransactionPath) until it ends.
func (c *Client) Attach(ctx context.Context, address string, progress ProgressFunc) error {
	method := "transaction"
	if v, err := c.getProperty(ctx, SysrootPath, SysrootIface, "ActiveTransaction"); err == nil {
		if t, ok := v.Value().([]any); ok {
			if at, err := parseActiveTransaction(t); err == nil && at != nil {
				method = at.Method
			}
		}
	}
	if err := c.follow(ctx, method, address, progress); err != nil {
		return err
	}
	return c.Reload(ctx)
}

// follow dials the transaction, subscribes, calls Start and reads signals until Finished
// (reference §6 steps 5–10). The connection is closed as soon as Finished arrives. When ctx
// ends, Cancel is sent and Finished awaited for Options.CancelWait.
func (c *Client) follow(ctx context.Context, method, address string, progress ProgressFunc) error {
	log := c.log.With(zap.String("txn", address), zap.String("method", method))
	lost, stopWatch := c.bus.WatchOwner()
	defer stopWatch()
	conn, err := c.opts.Dial(ctx, address)
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	defer func() { _ = conn.Close() }()

	startCtx, stopStart := context.WithCancel(ctx)
	defer stopStart()
	startDone := make(chan error, 1)
	go func() {
		_, err := conn.Call(startCtx, "Start")
		startDone <- err
	}()

	ctxDone := ctx.Done()
	var cancelTimeout <-chan time.Time
	cancelled := false
	for {
		select {
		case sig, ok := <-conn.Signals():
			if !ok {
				return c.lostErr(ctx, method, cancelled, "transaction connection closed before Finished")
			}
			ev, fin, err := decodeSignal(sig)
			if err != nil {
				log.Warn("undecodable transaction signal", zap.Error(err))
				continue
			}
			if ev != nil {
				c.deliver(log, progress, ev)
				continue
			}
			if fin != nil {
				log.Info("transaction finished", zap.Bool("success", fin.success), zap.String("message", fin.message))
				if fin.success {
					return nil
				}
				terr := &TxnError{Method: method, Message: fin.message}
				if cancelled {
					return errors.Join(ctx.Err(), terr)
				}
				return terr
			}
		case err := <-startDone:
			startDone = nil
			if err != nil && !cancelled {
				return fmt.Errorf("starting %s transaction: %w", method, err)
			}
		case <-lost:
			return c.lostErr(ctx, method, cancelled, "owner of "+BusName+" changed")
		case <-ctxDone:
			ctxDone, cancelled = nil, true
			log.Info("context ended, cancelling transaction", zap.Error(ctx.Err()))
			c.cancel(conn, log)
			cancelTimeout = c.opts.Clock.After(c.opts.CancelWait)
		case <-cancelTimeout:
			return fmt.Errorf("%s: no Finished within %s after Cancel: %w", method, c.opts.CancelWait, ctx.Err())
		}
	}
}

func (c *Client) lostErr(ctx context.Context, method string, cancelled bool, why string) error {
	err := fmt.Errorf("%s: %w: %s", method, ErrDaemonLost, why)
	if cancelled {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

func (c *Client) cancel(conn TxnConn, log *zap.Logger) {
	ctx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if _, err := conn.Call(ctx, "Cancel"); err != nil {
		log.Warn("cancelling transaction", zap.Error(err))
	}
}

func (c *Client) deliver(log *zap.Logger, progress ProgressFunc, ev Event) {
	switch e := ev.(type) {
	case Message:
		log.Info("rpm-ostree", zap.String("message", e.Text))
	case TaskBegin:
		log.Info("rpm-ostree task", zap.String("task", e.Text))
	case PercentProgress:
		log.Debug("rpm-ostree progress", zap.String("text", e.Text), zap.Uint32("percent", e.Percent))
	case DownloadProgress:
		log.Debug("rpm-ostree download", zap.Uint64("bytes", e.Bytes), zap.Uint64("bytes_per_second", e.BytesPerSecond))
	}
	if progress != nil {
		progress(ev)
	}
}
