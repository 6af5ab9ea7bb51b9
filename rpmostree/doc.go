// Package rpmostree is layerd's one owner of rpm-ostree: a client of the rpm-ostreed D-Bus API
// (the rpm-ostree D-Bus reference, rpm-ostree-dbus.md: names, signatures, protocol, errors).
//
// The client registers on the system bus, reads typed status (deployments, the active
// transaction), and runs transactions (Rebase, Deploy, UpdateDeployment, Rollback, Cleanup,
// FinalizeDeployment) over rpm-ostree's peer-to-peer transaction protocol, streaming progress as
// typed events. Callers decide on typed errors: ErrBusy (another transaction holds the daemon,
// retried with backoff up to Options.BusyTimeout), ErrRebootInitiated, ErrDaemonLost, and
// *TxnError, which carries rpm-ostree's own failure message.
//
// godbus is wrapped behind two narrow interfaces, Bus (the system-bus connection) and TxnDialer
// (the p2p transaction connection), so unit tests run against fakes.
package rpmostree
