package daemon

import (
	"errors"
	"fmt"
	"time"
)

// Backoff is capped exponential backoff with subtractive jitter: attempt n (from 1) waits
// min(Base·2^(n-1), Max), shortened by up to Jitter of itself, so it never exceeds Max and
// agents of a pool do not retry in the same second.
type Backoff struct {
	Base, Max time.Duration
	// Jitter is the fraction in [0, 1) a delay may be shortened by.
	Jitter float64
}

// Delay is the wait before attempt n; r is a random number in [0, 1).
func (b Backoff) Delay(n int, r float64) time.Duration {
	if n < 1 {
		n = 1
	}
	d := b.Base
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	if d > b.Max || d <= 0 {
		d = b.Max
	}
	if r < 0 || r >= 1 {
		r = 0
	}
	return d - time.Duration(float64(d)*b.Jitter*r)
}

func (b Backoff) validate(name string) error {
	if b.Base <= 0 || b.Max < b.Base {
		return fmt.Errorf("%s: want 0 < base ≤ max, got base %s, max %s", name, b.Base, b.Max)
	}
	if b.Jitter < 0 || b.Jitter >= 1 {
		return fmt.Errorf("%s: jitter %v outside [0, 1)", name, b.Jitter)
	}
	return nil
}

// Config tunes a Machine.
type Config struct {
	// Backoff spaces the retries of an update Degraded with a transient reason.
	Backoff Backoff
	// RetryBackoff spaces infrastructure errors retried in place (no reason code).
	RetryBackoff Backoff
	// SlotPoll is how often a busy pool is asked again for a slot (jittered by RetryBackoff's
	// Jitter).
	SlotPoll time.Duration
	// SettleTime is how long the Node must be Ready after the reboot before Done.
	SettleTime time.Duration
	// RebootWait is how often the state is checked again while the reboot is under way.
	RebootWait time.Duration
	// Rand is the jitter source: a random number in [0, 1) per call.
	Rand func() float64
}

// DefaultConfig returns the defaults with rand as the jitter source.
func DefaultConfig(rand func() float64) Config {
	return Config{
		Backoff:      Backoff{Base: time.Minute, Max: 30 * time.Minute, Jitter: 0.2},
		RetryBackoff: Backoff{Base: 2 * time.Second, Max: time.Minute, Jitter: 0.2},
		SlotPoll:     15 * time.Second,
		SettleTime:   10 * time.Second,
		RebootWait:   time.Minute,
		Rand:         rand,
	}
}

// Machine is the update state machine: Step and the tuning it needs. It holds no state of its
// own and is safe for concurrent use.
type Machine struct {
	cfg Config
}

// New returns a Machine, rejecting an incomplete Config.
func New(cfg Config) (*Machine, error) {
	if cfg.Rand == nil {
		return nil, errors.New("daemon: nil jitter source (Config.Rand)")
	}
	if err := cfg.Backoff.validate("daemon: Backoff"); err != nil {
		return nil, err
	}
	if err := cfg.RetryBackoff.validate("daemon: RetryBackoff"); err != nil {
		return nil, err
	}
	if cfg.SlotPoll <= 0 || cfg.RebootWait <= 0 || cfg.SettleTime < 0 {
		return nil, fmt.Errorf("daemon: want positive SlotPoll (%s) and RebootWait (%s), SettleTime (%s) ≥ 0",
			cfg.SlotPoll, cfg.RebootWait, cfg.SettleTime)
	}
	return &Machine{cfg: cfg}, nil
}

// RetryAfter is the backoff before retrying an update that failed for the attempt-th time.
func (m *Machine) RetryAfter(attempt int) time.Duration {
	return m.cfg.Backoff.Delay(attempt, m.rand())
}

func (m *Machine) retryInPlace(retries int) time.Duration {
	return m.cfg.RetryBackoff.Delay(retries, m.rand())
}

func (m *Machine) slotPoll() time.Duration {
	d := m.cfg.SlotPoll
	return d - time.Duration(float64(d)*m.cfg.RetryBackoff.Jitter*m.rand())
}

// rand is Config.Rand kept inside [0, 1).
func (m *Machine) rand() float64 {
	r := m.cfg.Rand()
	if r < 0 || r >= 1 {
		return 0
	}
	return r
}
