package image

import (
	"context"
	"sync"
)

// Fake is a Verifier for unit tests of callers (the update loop). Unset funcs succeed with
// minimal values; Calls records the method names in order.
type Fake struct {
	ResolveFunc  func(ctx context.Context, ref string) (*Resolved, error)
	VerifyFunc   func(ctx context.Context, r *Resolved) (*Verdict, error)
	ValidateFunc func(ctx context.Context, r *Resolved) (*Info, error)

	mu    sync.Mutex
	calls []string
}

var _ Verifier = (*Fake)(nil)

func (f *Fake) record(name string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, name)
}

// Calls returns the methods called so far.
func (f *Fake) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

// Resolve implements Verifier.
func (f *Fake) Resolve(ctx context.Context, ref string) (*Resolved, error) {
	f.record("Resolve")
	if f.ResolveFunc != nil {
		return f.ResolveFunc(ctx, ref)
	}
	return &Resolved{Input: ref, Name: ref, Pinned: ref}, nil
}

// Verify implements Verifier.
func (f *Fake) Verify(ctx context.Context, r *Resolved) (*Verdict, error) {
	f.record("Verify")
	if f.VerifyFunc != nil {
		return f.VerifyFunc(ctx, r)
	}
	return &Verdict{Accepted: true, Scope: "default", Types: []string{"insecureAcceptAnything"}}, nil
}

// Validate implements Verifier.
func (f *Fake) Validate(ctx context.Context, r *Resolved) (*Info, error) {
	f.record("Validate")
	if f.ValidateFunc != nil {
		return f.ValidateFunc(ctx, r)
	}
	return &Info{Labels: map[string]string{LabelBootc: "1"}, Bootable: LabelBootc + "=1"}, nil
}
