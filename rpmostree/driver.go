package rpmostree

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// DriverFile is where rpm-ostreed records the registered update driver: a deploy-family
// transaction with the option register-driver writes it. It lives on /run, so a reboot forgets
// the driver. In a DaemonSet pod the host's /run is mounted at /run.
const DriverFile = "/run/rpm-ostree/update-driver.gv"

// The keys of the driver file's a{sv}, both strings.
const (
	driverNameKey = "driver-name"
	driverUnitKey = "driver-sd-unit"
)

// ErrBadDriverFile means the driver file exists but is not a serialized a{sv} naming a driver.
var ErrBadDriverFile = errors.New("malformed rpm-ostree update driver file")

// UpdateDriver is the agent registered with rpm-ostree as the one driving updates
// (`rpm-ostree status` shows it as AutomaticUpdatesDriver; the CLI refuses upgrade and rebase
// without --bypass-driver while its unit is active).
type UpdateDriver struct {
	// Name is the name the driver registered with, e.g. "Zincati" or "layerd".
	Name string
	// Unit is the systemd unit of the process that registered (rpm-ostreed derives it from the
	// caller's cgroup, the user unit first), e.g. "zincati.service". Empty when the file has
	// none.
	Unit string
}

// ReadUpdateDriver reads the driver file at path (DriverFile on a host). No file means no
// driver is registered: nil, nil. A file that does not decode fails with ErrBadDriverFile.
func ReadUpdateDriver(path string) (*UpdateDriver, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the rpm-ostree update driver: %w", err)
	}
	d, err := ParseUpdateDriver(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// ParseUpdateDriver decodes the driver file's content: a GVariant a{sv} in normal form, little
// endian, as rpm-ostreed writes it. driver-name must be there as a string (rpm-ostree's own
// reader insists on it too); driver-sd-unit may be missing. Other keys, and keys whose value
// has another type, are ignored.
func ParseUpdateDriver(data []byte) (*UpdateDriver, error) {
	dict, err := decodeStringVardict(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadDriverFile, err)
	}
	name, ok := dict[driverNameKey]
	if !ok {
		return nil, fmt.Errorf("%w: no string %s", ErrBadDriverFile, driverNameKey)
	}
	return &UpdateDriver{Name: name, Unit: dict[driverUnitKey]}, nil
}
