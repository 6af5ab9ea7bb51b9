package rpmostree

import (
	"context"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// ActiveTransaction is Sysroot.ActiveTransaction when a transaction is active.
type ActiveTransaction struct {
	Method string          // e.g. "Rebase"
	Sender string          // the caller's unique bus name
	OSPath dbus.ObjectPath // the OS object the method was called on
}

// Status is the daemon's view of the sysroot.
type Status struct {
	// Path is the sysroot the daemon manages.
	Path string
	// OSName is the stateroot of the OS object the client uses ("" when there is none).
	OSName string
	// Deployments of every stateroot in boot order; a staged deployment is first.
	Deployments []Deployment
	// Booted, Default and Rollback come from the OS object (nil when empty). Default is the
	// staged or pending deployment, else the booted one.
	Booted, Default, Rollback *Deployment
	// Staged is the staged deployment, if any.
	Staged *Deployment
	// ActiveTransaction is nil when idle.
	ActiveTransaction *ActiveTransaction
	// ActiveTransactionPath is the address of the active transaction ("" when idle).
	ActiveTransactionPath string
}

// Status reloads the daemon's sysroot and reads the Sysroot and OS properties.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	if err := c.Reload(ctx); err != nil {
		return nil, err
	}
	sys, err := c.getAll(ctx, SysrootPath, SysrootIface)
	if err != nil {
		return nil, err
	}
	st := &Status{}
	if err := parseSysrootProps(sys, st); err != nil {
		return nil, err
	}
	osPath, err := c.OSPath(ctx)
	if err != nil {
		return nil, err
	}
	osProps, err := c.getAll(ctx, osPath, OSIface)
	if err != nil {
		return nil, err
	}
	if err := parseOSProps(osProps, st); err != nil {
		return nil, err
	}
	return st, nil
}

// ActiveTransactionPath reads Sysroot.ActiveTransactionPath ("" when idle).
func (c *Client) ActiveTransactionPath(ctx context.Context) (string, error) {
	v, err := c.getProperty(ctx, SysrootPath, SysrootIface, "ActiveTransactionPath")
	if err != nil {
		return "", err
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("ActiveTransactionPath: D-Bus type %q, want \"s\"", v.Signature())
	}
	return s, nil
}

func parseSysrootProps(props map[string]dbus.Variant, st *Status) error {
	if err := propInto(props, "Path", &st.Path); err != nil {
		return err
	}
	var dicts []map[string]dbus.Variant
	if err := propInto(props, "Deployments", &dicts); err != nil {
		return err
	}
	deps, err := ParseDeployments(dicts)
	if err != nil {
		return fmt.Errorf("Sysroot.Deployments: %w", err)
	}
	st.Deployments = deps
	if len(deps) > 0 && deps[0].Staged {
		st.Staged = &st.Deployments[0]
	}
	if err := propInto(props, "ActiveTransactionPath", &st.ActiveTransactionPath); err != nil {
		return err
	}
	var txn []any
	if err := propInto(props, "ActiveTransaction", &txn); err != nil {
		return err
	}
	st.ActiveTransaction, err = parseActiveTransaction(txn)
	return err
}

func parseActiveTransaction(v []any) (*ActiveTransaction, error) {
	if len(v) != 3 {
		return nil, fmt.Errorf("ActiveTransaction: %d fields, want 3", len(v))
	}
	method, ok1 := v[0].(string)
	sender, ok2 := v[1].(string)
	path, ok3 := v[2].(string)
	if !ok1 || !ok2 || !ok3 {
		return nil, fmt.Errorf("ActiveTransaction: want (sss), got %T %T %T", v[0], v[1], v[2])
	}
	if method == "" && sender == "" && path == "" {
		return nil, nil
	}
	return &ActiveTransaction{Method: method, Sender: sender, OSPath: dbus.ObjectPath(path)}, nil
}

func parseOSProps(props map[string]dbus.Variant, st *Status) error {
	if err := propInto(props, "Name", &st.OSName); err != nil {
		return err
	}
	for _, p := range []struct {
		name string
		dst  **Deployment
	}{
		{"BootedDeployment", &st.Booted},
		{"DefaultDeployment", &st.Default},
		{"RollbackDeployment", &st.Rollback},
	} {
		var dict map[string]dbus.Variant
		if err := propInto(props, p.name, &dict); err != nil {
			return err
		}
		d, err := parseOptionalDeployment(dict)
		if err != nil {
			return fmt.Errorf("OS.%s: %w", p.name, err)
		}
		*p.dst = d
	}
	return nil
}

// propInto stores property name of props into dst; a missing property leaves dst unchanged.
func propInto(props map[string]dbus.Variant, name string, dst any) error {
	v, ok := props[name]
	if !ok {
		return nil
	}
	if err := v.Store(dst); err != nil {
		return fmt.Errorf("property %s (D-Bus type %q): %w", name, v.Signature(), err)
	}
	return nil
}
