// Package image resolves, verifies and validates OS images before anything touches the host.
//
// Resolve pins a reference (tag or digest) to the per-arch manifest digest the node will deploy,
// Verify evaluates the containers signature policy (policy.json + registries.d) against exactly
// that digest, and Validate checks that the image is a bootable OS image for this node. Only
// manifests, the image config and signatures are fetched, never layers. Every failure is an
// *Error carrying a reason code. The registry world (mirrors, insecure, blocked, short names) is
// the host's registries.conf, the one rpm-ostree pulls through.
package image

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/reason"
)

// Verifier is what the update loop needs from this package.
type Verifier interface {
	Resolve(ctx context.Context, ref string) (*Resolved, error)
	Verify(ctx context.Context, r *Resolved) (*Verdict, error)
	Validate(ctx context.Context, r *Resolved) (*Info, error)
}

var _ Verifier = (*Client)(nil)

// Client implements Verifier on go.podman.io/image. It is safe for concurrent use.
type Client struct {
	opts Options
	log  *zap.Logger
}

// New returns a Client. Files named in opts are read on every call, so edits to policy.json or
// registries.conf take effect without a restart.
func New(opts Options) (*Client, error) {
	opts = opts.withDefaults()
	if opts.OS == "" || opts.Arch == "" {
		return nil, errors.New("image: node OS and architecture are required")
	}
	return &Client{opts: opts, log: opts.Logger}, nil
}

// retry runs op until it succeeds, fails with a non-retryable error, the attempts are used up or
// ctx ends. Each attempt gets its own timeout. Errors are classified with fallback.
func (c *Client) retry(ctx context.Context, img string, fallback reason.Code, op func(ctx context.Context) error) error {
	b := c.opts.Backoff
	for attempt := 1; ; attempt++ {
		err := c.attempt(ctx, op)
		if err == nil {
			return nil
		}
		var typed *Error
		if errors.As(err, &typed) {
			return typed // already decided: typed errors are never retried
		}
		cl := classify(err, fallback)
		if !cl.retryable {
			return newError(cl.code, img, err)
		}
		if attempt >= b.Attempts {
			return newError(cl.code, img, fmt.Errorf("giving up after %d attempts: %w", attempt, err))
		}
		if ctx.Err() != nil {
			return newError(cl.code, img, fmt.Errorf("%w (%v)", err, context.Cause(ctx)))
		}
		delay := b.Delay(attempt)
		if dl, ok := ctx.Deadline(); ok && c.opts.Clock.Now().Add(delay).After(dl) {
			return newError(cl.code, img, fmt.Errorf("deadline leaves no room for retry %d: %w", attempt, err))
		}
		c.log.Info("registry failure, retrying", zap.String("image", img), zap.Int("attempt", attempt),
			zap.Duration("delay", delay), zap.Error(err))
		select {
		case <-ctx.Done():
			return newError(cl.code, img, fmt.Errorf("%w (%v)", err, context.Cause(ctx)))
		case <-c.opts.Clock.After(delay):
		}
	}
}

func (c *Client) attempt(ctx context.Context, op func(ctx context.Context) error) error {
	if c.opts.AttemptTimeout <= 0 {
		return op(ctx)
	}
	actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
	defer cancel()
	return op(actx)
}
