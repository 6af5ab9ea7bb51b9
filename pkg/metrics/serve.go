package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Timeouts of the servers Serve runs.
const (
	readHeaderTimeout = 5 * time.Second
	shutdownTimeout   = 5 * time.Second
)

// Serve listens on addr (host:port; port 0 picks one) and serves h until ctx is done, then shuts
// the server down gracefully. It returns once listening: the bound address, and a channel that
// receives the server's end (nil after a shutdown caused by ctx) and is then closed.
func Serve(ctx context.Context, addr string, h http.Handler) (string, <-chan error, error) {
	if h == nil {
		return "", nil, errors.New("metrics.Serve: nil handler")
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
	}
	bound := ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	done := make(chan error, 1)
	go func() {
		defer close(done)
		select {
		case err := <-served:
			done <- fmt.Errorf("serving %s: %w", bound, err)
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
			defer cancel()
			err := srv.Shutdown(sctx)
			if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
				err = errors.Join(err, serr)
			}
			if err != nil {
				done <- fmt.Errorf("shutting down %s: %w", bound, err)
				return
			}
			done <- nil
		}
	}()
	return bound, done, nil
}
