// Package updaters finds the other updaters that own a host, so that layerd refuses to fight
// them (reason ConflictingUpdater) unless the pool policy allows them (PolicyKey). It looks at
// three owners, each through its own interface to the host:
//
//   - rpm-ostree's registered update driver (rpmostree.ReadUpdateDriver): a driver other than
//     layerd whose systemd unit still runs (or whose unit cannot be checked);
//   - systemd units (systemd.Units): zincati.service and bootc-fetch-apply-updates.timer
//     active or enabled, bootc-fetch-apply-updates.service running;
//   - the machine-config-daemon's files on the host root (<host-root>/etc/machine-config-daemon).
//
// See docs/updaters.md.
package updaters

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
)

// Self is the name layerd registers with rpm-ostree as its update driver (register-driver).
const Self = "layerd"

// Names of the updaters found by their units or files; a registered driver keeps its own name,
// except that a driver file that does not decode is UnknownUpdateDriver.
const (
	Zincati             = "zincati"
	Bootc               = "bootc"
	MachineConfigDaemon = "machine-config-daemon"
	UnknownUpdateDriver = "unknown-update-driver"
)

const (
	sourceUnits          = "systemd units"
	sourceDriverUnitFmt  = "the registered update driver's unit %s"
	mcdDir               = "etc/machine-config-daemon"
	mcdCurrentConfig     = "currentconfig"
	mcdNodeAnnotations   = "node-annotations.json"
	mcdNodeAnnotationBak = "node-annotation.json.bak"
)

// Updater is another updater found on the host.
type Updater struct {
	// Name is what PolicyKey lists to allow it: Zincati, Bootc, MachineConfigDaemon, or the
	// name a driver registered with rpm-ostree ("Zincati" for zincati's own registration).
	Name string
	// Evidence says what shows it, e.g. "zincati.service is active (running) and enabled".
	Evidence string
}

func (u Updater) String() string { return u.Name + " (" + u.Evidence + ")" }

// Unchecked is a source the detector could not look at, e.g. systemd units on a bus without
// systemd. It is neither a conflict nor a failure: the caller logs it.
type Unchecked struct {
	Source string
	Err    error
}

// Report is the outcome of one check.
type Report struct {
	// Conflicts are the updaters the pool policy does not allow: layerd must not update.
	Conflicts []Updater
	// Allowed were found but the pool policy allows them.
	Allowed []Updater
	// Ignored were found but do not own the host any more (a registered driver whose unit
	// stopped, as the rpm-ostree CLI ignores it).
	Ignored []Updater
	// Unchecked are the sources that could not be checked.
	Unchecked []Unchecked
}

// Message is the Degraded message for the conflicts, naming each updater and its evidence.
func (r Report) Message() string {
	if len(r.Conflicts) == 0 {
		return ""
	}
	parts := make([]string, len(r.Conflicts))
	for i, u := range r.Conflicts {
		parts[i] = u.String()
	}
	return fmt.Sprintf("another updater owns the host: %s; disable it or allow it in the pool policy (%s)",
		strings.Join(parts, "; "), PolicyKey)
}

// Checker checks a host for other updaters; *Detector implements it, Fake is for unit tests.
type Checker interface {
	Check(ctx context.Context, policy Policy) (Report, error)
}

var (
	_ Checker = (*Detector)(nil)
	_ Checker = (*Fake)(nil)
)

// Options configure a Detector.
type Options struct {
	// DriverFile is rpm-ostree's update driver file (default rpmostree.DriverFile, the host's
	// /run being mounted at /run).
	DriverFile string
	// HostRoot is where the host's root is mounted (the agent's --host-root). Required.
	HostRoot string
	// Units tells systemd unit states on the host's system bus. Required.
	Units systemd.Units
	// Self is layerd's own driver name (default Self).
	Self string
}

// Detector finds other updaters (see the package documentation).
type Detector struct {
	opts Options
}

// New returns a Detector.
func New(o Options) (*Detector, error) {
	if o.Units == nil {
		return nil, errors.New("updaters.New: nil Units")
	}
	if o.HostRoot == "" {
		return nil, errors.New("updaters.New: empty HostRoot")
	}
	if o.DriverFile == "" {
		o.DriverFile = rpmostree.DriverFile
	}
	if o.Self == "" {
		o.Self = Self
	}
	return &Detector{opts: o}, nil
}

// Check looks at every owner and sorts what it finds by policy. An error means a source failed
// (an I/O or D-Bus error other than "no systemd on the bus"): the caller retries.
func (d *Detector) Check(ctx context.Context, policy Policy) (Report, error) {
	var r Report
	var found []Updater
	driver, err := d.driver(ctx, &r)
	if err != nil {
		return Report{}, err
	}
	found = append(found, driver...)
	units, err := d.units(ctx, &r)
	if err != nil {
		return Report{}, err
	}
	found = append(found, units...)
	mcd, err := d.machineConfigDaemon()
	if err != nil {
		return Report{}, err
	}
	found = append(found, mcd...)
	policy.sort(found, &r)
	return r, nil
}

// driver checks rpm-ostree's registered update driver.
func (d *Detector) driver(ctx context.Context, r *Report) ([]Updater, error) {
	drv, err := rpmostree.ReadUpdateDriver(d.opts.DriverFile)
	if errors.Is(err, rpmostree.ErrBadDriverFile) {
		return []Updater{{Name: UnknownUpdateDriver, Evidence: err.Error()}}, nil
	}
	if err != nil {
		return nil, err
	}
	if drv == nil || strings.EqualFold(drv.Name, d.opts.Self) {
		return nil, nil
	}
	registered := "registered as rpm-ostree's update driver"
	if drv.Unit == "" {
		return []Updater{{Name: drv.Name, Evidence: registered + " (no systemd unit recorded)"}}, nil
	}
	u, err := d.opts.Units.Unit(ctx, drv.Unit)
	switch {
	case errors.Is(err, systemd.ErrNoSystemd):
		r.Unchecked = append(r.Unchecked, Unchecked{Source: fmt.Sprintf(sourceDriverUnitFmt, drv.Unit), Err: err})
		return []Updater{{Name: drv.Name, Evidence: fmt.Sprintf("%s by %s (its state unknown)", registered, drv.Unit)}}, nil
	case err != nil:
		return nil, fmt.Errorf("checking the update driver %s: %w", drv.Name, err)
	}
	up := Updater{Name: drv.Name, Evidence: fmt.Sprintf("%s by %s, which is %s", registered, drv.Unit, describe(u))}
	// rpm-ostree's CLI ignores a driver whose unit is not running, but counts a failed one.
	if !u.Active() && u.ActiveState != "failed" {
		r.Ignored = append(r.Ignored, up)
		return nil, nil
	}
	return []Updater{up}, nil
}

// unitCheck is a unit that shows an updater: running, or (when enabled counts) set to start.
type unitCheck struct {
	updater, unit string
	enabled       bool
}

var unitChecks = []unitCheck{
	{Zincati, "zincati.service", true},
	{Bootc, "bootc-fetch-apply-updates.timer", true},
	{Bootc, "bootc-fetch-apply-updates.service", false}, // a run in progress
}

// units checks the updaters' systemd units; one Updater per updater, its units' evidence joined.
func (d *Detector) units(ctx context.Context, r *Report) ([]Updater, error) {
	var out []Updater
	for _, c := range unitChecks {
		u, err := d.opts.Units.Unit(ctx, c.unit)
		if errors.Is(err, systemd.ErrNoSystemd) {
			r.Unchecked = append(r.Unchecked, Unchecked{Source: sourceUnits, Err: err})
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("checking %s: %w", c.unit, err)
		}
		if !u.Active() && !(c.enabled && u.Enabled()) {
			continue
		}
		ev := c.unit + " is " + describe(u)
		if n := len(out); n > 0 && out[n-1].Name == c.updater {
			out[n-1].Evidence += "; " + ev
			continue
		}
		out = append(out, Updater{Name: c.updater, Evidence: ev})
	}
	return out, nil
}

// describe is "active (running) and enabled", "inactive (dead)", …
func describe(u systemd.UnitState) string {
	s := u.ActiveState
	if u.SubState != "" {
		s += " (" + u.SubState + ")"
	}
	if u.UnitFileState != "" {
		s += " and " + u.UnitFileState
	}
	return s
}

// machineConfigDaemon looks for the files the machine-config-daemon and the machine-config
// server leave on an OpenShift node: the MCD's on-disk current config, and the initial node
// annotations the server writes at first boot (renamed to .bak once the MCD has applied them).
func (d *Detector) machineConfigDaemon() ([]Updater, error) {
	for _, name := range []string{mcdCurrentConfig, mcdNodeAnnotations, mcdNodeAnnotationBak} {
		rel := filepath.Join(mcdDir, name)
		// Lstat: a link in the pod's view of the host would point into the pod's own tree.
		_, err := os.Lstat(filepath.Join(d.opts.HostRoot, rel))
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("checking for the machine-config-daemon: %w", err)
		}
		return []Updater{{Name: MachineConfigDaemon, Evidence: "/" + rel + " exists"}}, nil
	}
	return nil, nil
}

// Fake is a Checker for unit tests: it sorts Found by the policy, or fails with Err.
type Fake struct {
	Found     []Updater
	Unchecked []Unchecked
	Err       error
}

// Check implements Checker.
func (f *Fake) Check(_ context.Context, policy Policy) (Report, error) {
	if f.Err != nil {
		return Report{}, f.Err
	}
	r := Report{Unchecked: append([]Unchecked(nil), f.Unchecked...)}
	policy.sort(f.Found, &r)
	return r, nil
}
