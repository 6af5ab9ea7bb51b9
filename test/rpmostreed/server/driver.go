package server

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.uber.org/zap"
)

// DriverFile is rpm-ostreed's update driver file under the run directory (Options.RunDir):
// a deploy-family transaction with the option register-driver (s) writes it, before its other
// work; with an empty revision (Deploy "", UpdateDeployment set-revision "") it only
// registers. The D-Bus API enforces nothing about a registered driver (the CLI does).
const DriverFile = "rpm-ostree/update-driver.gv"

// The a{sv} keys, both strings, in the order rpm-ostreed adds them.
const (
	driverNameKey = "driver-name"
	driverUnitKey = "driver-sd-unit"
)

const msgRegisterOnly = "Empty string revision found; registering update driver only"

// EncodeDriverInfo is the driver file's content: the a{sv} {driver-name: <name>,
// driver-sd-unit: <unit>} serialized as GLib does (normal form, little endian).
func EncodeDriverInfo(name, unit string) []byte {
	return encodeStringVardict([][2]string{{driverNameKey, name}, {driverUnitKey, unit}})
}

// recordDriver writes the driver file atomically (a temporary file renamed into place).
// rpm-ostreed fails the transaction with "could not find caller systemd unit" when it cannot
// tell the caller's unit; the stand-in records an empty unit instead and logs it, because its
// callers outside the booted tier run in no systemd unit at all.
func (s *Server) recordDriver(name, sender string) error {
	unit, err := s.callerUnit(sender)
	if err != nil {
		s.log.Warn("update driver registered without a systemd unit", zap.String("driver", name), zap.String("sender", sender), zap.Error(err))
	}
	path := filepath.Join(s.opts.RunDir, DriverFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("recording the update driver: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".update-driver-*")
	if err != nil {
		return fmt.Errorf("recording the update driver: %w", err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }() // gone after the rename
	_, werr := tmp.Write(EncodeDriverInfo(name, unit))
	if err := errors.Join(werr, tmp.Chmod(0o644), tmp.Close()); err != nil {
		return fmt.Errorf("recording the update driver: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("recording the update driver: %w", err)
	}
	s.log.Info("update driver registered", zap.String("driver", name), zap.String("unit", unit))
	return nil
}

// callerUnit is the systemd unit of the process behind a bus name, as rpm-ostreed asks
// sd_pid_get_user_unit, then sd_pid_get_unit: from the process's cgroup (/proc/<pid>/cgroup).
func (s *Server) callerUnit(sender string) (string, error) {
	var pid uint32
	if err := s.conn.BusObject().Call("org.freedesktop.DBus.GetConnectionUnixProcessID", 0, sender).Store(&pid); err != nil {
		return "", fmt.Errorf("the caller's pid: %w", err)
	}
	if pid == 0 { // a peer outside the bus's PID namespace
		return "", errors.New("the caller's pid is not visible")
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", fmt.Errorf("the caller's cgroup: %w", err)
	}
	unit := UnitOfCgroup(data)
	if unit == "" {
		return "", fmt.Errorf("pid %d is in no systemd unit", pid)
	}
	return unit, nil
}

// unitSuffixes are the unit types a process's cgroup can be named after.
var unitSuffixes = []string{".service", ".scope", ".socket", ".mount", ".swap"}

// UnitOfCgroup names the unit a /proc/<pid>/cgroup puts the process in, the way systemd's
// sd_pid_get_user_unit and sd_pid_get_unit read it: the cgroup path of the unified hierarchy
// ("0::"), else of the named systemd hierarchy ("name=systemd"); slices are skipped and the
// first unit is the system unit; inside user@<uid>.service the next unit is the user unit, which
// wins. "" when the path names no unit (a process in the root cgroup, a cgroupfs-driver pod).
func UnitOfCgroup(procCgroup []byte) string {
	var unified, named string
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			unified = parts[2]
		case parts[1] == "name=systemd":
			named = parts[2]
		}
	}
	path := unified
	if path == "" || path == "/" {
		path = named
	}
	system, rest := firstUnit(strings.Split(strings.Trim(path, "/"), "/"))
	if strings.HasPrefix(system, "user@") && strings.HasSuffix(system, ".service") {
		if user, _ := firstUnit(rest); user != "" {
			return user
		}
	}
	return system
}

// firstUnit skips slices and returns the first unit name and the components after it.
func firstUnit(components []string) (string, []string) {
	for i, c := range components {
		if strings.HasSuffix(c, ".slice") {
			continue
		}
		for _, suffix := range unitSuffixes {
			if len(c) > len(suffix) && strings.HasSuffix(c, suffix) {
				return c, components[i+1:]
			}
		}
		return "", nil
	}
	return "", nil
}
