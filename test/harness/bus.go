package harness

import (
	"fmt"
	"time"

	"github.com/godbus/dbus/v5"
)

const rpmOstreeName = "org.projectatomic.rpmostree1"

// waitForName waits until rpm-ostree's bus name has an owner on the bus at addr, or the owner
// process exits (done closed).
func waitForName(addr string, timeout time.Duration, done <-chan struct{}) error {
	conn, err := dbus.Connect(addr)
	if err != nil {
		return fmt.Errorf("connecting to %s: %w", addr, err)
	}
	defer conn.Close()
	deadline := time.Now().Add(timeout)
	for {
		var has bool
		if err := conn.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, rpmOstreeName).Store(&has); err != nil {
			return fmt.Errorf("asking the bus for %s: %w", rpmOstreeName, err)
		}
		if has {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("the process exited before owning %s", rpmOstreeName)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not on the bus after %v", rpmOstreeName, timeout)
		}
	}
}
