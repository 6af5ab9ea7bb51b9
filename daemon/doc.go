// Package daemon holds layerd's update state machine and (later) the agent loop that runs it.
//
// The state machine is data and pure functions: Machine.Step takes the current State and an
// Observed snapshot (the Node's annotations as nodestatus.Read parses them, the Node's readiness
// and boot ID, rpm-ostree's deployments and active transaction, whether this node holds a reboot
// slot, and the Outcome of the effects the previous Step asked for) and returns a Decision: the
// next State, the Effects to execute in order, and when to step again. It does no I/O and reads
// no clock: time comes in Observed.Now and jitter from Config.Rand.
//
// One handler per phase is chosen in a single switch (Step). Every change of phase is checked
// against Transitions, which docs/fsm.md draws (a test keeps the two equal). Derive rebuilds the
// State from an Observed snapshot alone, so an agent killed at any point and restarted converges
// without a second reboot: DESIGN §3, "every step is idempotent and re-derivable".
//
// The agent loop's contract:
//   - Step with the zero State at start (Step derives it), then with the State it returned.
//   - Execute Decision.Effects in order; stop at the first that fails. Put the Outcome of the
//     last effect executed (success or failure) in Observed.Last of the next Step, and leave
//     Last empty when no effect ran since the previous Step.
//   - Step again at once after executing effects; otherwise when the watched Node changes, or
//     after Decision.RetryAfter when it is set.
//   - While a long effect runs (Resolve, Verify, Validate, Stage, AttachTxn, Drain), a Step
//     with Observed.InFlight set may return Interrupt: cancel that effect's context.
//   - A Decision with Err is a bug in the state machine: log it and exit; the restarted agent
//     derives its state again.
package daemon
