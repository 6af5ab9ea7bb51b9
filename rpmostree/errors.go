package rpmostree

import (
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// ErrBusy means another, different transaction holds the daemon (Code26). Operations retry it
// with backoff until Options.BusyTimeout; errors.Is(err, ErrBusy) tells a caller it ran out.
var ErrBusy = errors.New("rpm-ostree is busy with another transaction")

// ErrRebootInitiated means the daemon already started a reboot and refuses new transactions.
var ErrRebootInitiated = errors.New("rpm-ostree initiated a reboot")

// ErrDaemonLost means the daemon went away during a transaction (the p2p connection closed
// before Finished, or the owner of the bus name changed): treat the transaction as failed.
var ErrDaemonLost = errors.New("rpm-ostree daemon lost during transaction")

const rebootInitiatedMsg = "Reboot initiated, cannot start new transaction"

// BusyError is the Code26 error of a method call, with rpm-ostree's message (which names the
// title of the transaction that holds the daemon). It matches ErrBusy.
type BusyError struct {
	Method  string
	Message string
}

func (e *BusyError) Error() string {
	return fmt.Sprintf("%s: %s: %s", e.Method, ErrBusy, e.Message)
}

// Is reports ErrBusy.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// TxnError is a transaction that ended with Finished(false, Message). Message is rpm-ostree's
// text word for word, e.g. "Old and new refs are equal: …".
type TxnError struct {
	Method  string
	Message string
}

func (e *TxnError) Error() string {
	return fmt.Sprintf("rpm-ostree %s failed: %s", e.Method, e.Message)
}

// dbusErrorMessage returns the name and first string of a D-Bus error, if err is one.
func dbusErrorMessage(err error) (name, msg string, ok bool) {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name, firstString(de.Body), true
	}
	var dep *dbus.Error
	if errors.As(err, &dep) && dep != nil {
		return dep.Name, firstString(dep.Body), true
	}
	return "", "", false
}

func firstString(body []any) string {
	if len(body) == 0 {
		return ""
	}
	s, _ := body[0].(string)
	return s
}

func isNoReply(err error) bool {
	name, _, ok := dbusErrorMessage(err)
	return ok && name == ErrNameNoReply
}

// classifyCallError turns the error of a transaction method call into a typed error.
func classifyCallError(method string, err error) error {
	name, msg, ok := dbusErrorMessage(err)
	switch {
	case !ok:
		return fmt.Errorf("calling %s: %w", method, err)
	case name == ErrNameBusy:
		return &BusyError{Method: method, Message: msg}
	case name == ErrNameFailed && msg == rebootInitiatedMsg:
		return fmt.Errorf("calling %s: %w: %s", method, ErrRebootInitiated, msg)
	default:
		return fmt.Errorf("calling %s: %w", method, err)
	}
}
