package systemd

import (
	"fmt"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify messages. Outside systemd (no NOTIFY_SOCKET) every call is a no-op.
type Notifier struct{}

// Ready tells systemd the agent finished starting.
func (Notifier) Ready() error { return notify(daemon.SdNotifyReady) }

// Status sets the one-line STATUS= shown by `systemctl status`.
func (Notifier) Status(s string) error { return notify("STATUS=" + s) }

// Stopping tells systemd the agent is shutting down.
func (Notifier) Stopping() error { return notify(daemon.SdNotifyStopping) }

func notify(state string) error {
	if _, err := daemon.SdNotify(false, state); err != nil {
		return fmt.Errorf("sd_notify %q: %w", state, err)
	}
	return nil
}
