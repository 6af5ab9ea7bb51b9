package drain

import (
	"context"
	"slices"
	"sync"
)

var _ Interface = (*Fake)(nil)

// Fake is an Interface for unit tests of callers. It models the node's cordon: Cordon claims it
// only when the node is schedulable, Uncordon lifts it. Configure it with NewFake and the Set
// methods; it is safe for concurrent use.
type Fake struct {
	mu            sync.Mutex
	unschedulable bool
	cordonErr     error
	uncordonErr   error
	drain         func(ctx context.Context) error
	calls         []string
}

// NewFake returns a Fake for a node that is unschedulable already (someone else's cordon) or
// not, and whose Drain succeeds.
func NewFake(unschedulable bool) *Fake {
	return &Fake{unschedulable: unschedulable}
}

// SetCordonErrors makes Cordon and Uncordon fail with the given errors (nil: succeed).
func (f *Fake) SetCordonErrors(cordon, uncordon error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cordonErr, f.uncordonErr = cordon, uncordon
}

// SetDrainError makes Drain return err, e.g. a *TimeoutError.
func (f *Fake) SetDrainError(err error) {
	f.SetDrainFunc(func(context.Context) error { return err })
}

// SetDrainFunc makes Drain call fn, e.g. to block until ctx is done.
func (f *Fake) SetDrainFunc(fn func(ctx context.Context) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.drain = fn
}

// Cordon records the call; it claims the cordon only when the node was schedulable.
func (f *Fake) Cordon(context.Context) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "Cordon")
	if f.cordonErr != nil {
		return false, f.cordonErr
	}
	if f.unschedulable {
		return false, nil
	}
	f.unschedulable = true
	return true, nil
}

// Uncordon records the call and makes the node schedulable.
func (f *Fake) Uncordon(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, "Uncordon")
	if f.uncordonErr != nil {
		return f.uncordonErr
	}
	f.unschedulable = false
	return nil
}

// Drain records the call and returns what SetDrainError or SetDrainFunc configured.
func (f *Fake) Drain(ctx context.Context) error {
	f.mu.Lock()
	f.calls = append(f.calls, "Drain")
	fn := f.drain
	f.mu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(ctx)
}

// Unschedulable reports the modelled cordon.
func (f *Fake) Unschedulable() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.unschedulable
}

// Calls returns the method names called so far, in order.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}
