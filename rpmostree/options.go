package rpmostree

import "github.com/godbus/dbus/v5"

// DeployOptions are the options of Rebase, Deploy, Upgrade and UpdateDeployment (reference
// §4.1). Booleans are sent (as "b") only when true; strings (as "s") only when non-empty. The
// daemon silently ignores a key with another variant type, so the types here are exact.
type DeployOptions struct {
	Reboot           bool
	LockFinalization bool
	DownloadOnly     bool
	CacheOnly        bool
	DryRun           bool
	SkipPurge        bool
	// AllowDowngrade nil keeps the daemon's default (true for Rebase and Deploy and whenever
	// a refspec or revision is set).
	AllowDowngrade *bool
	// InitiatingCommandLine becomes the transaction title others see in the busy message.
	InitiatingCommandLine string
	RegisterDriver        string
	// Revision pins Rebase to a revision (older form of the set-revision modifier).
	Revision     string
	CustomOrigin *CustomOrigin
	// Progress receives the transaction's events (not sent to the daemon).
	Progress ProgressFunc
}

// RebaseOptions are the options of Rebase.
type RebaseOptions = DeployOptions

func (o DeployOptions) vardict() map[string]dbus.Variant {
	m := map[string]dbus.Variant{}
	putBool(m, "reboot", o.Reboot)
	putBool(m, "lock-finalization", o.LockFinalization)
	putBool(m, "download-only", o.DownloadOnly)
	putBool(m, "cache-only", o.CacheOnly)
	putBool(m, "dry-run", o.DryRun)
	putBool(m, "skip-purge", o.SkipPurge)
	if o.AllowDowngrade != nil {
		m["allow-downgrade"] = dbus.MakeVariant(*o.AllowDowngrade)
	}
	putString(m, "initiating-command-line", o.InitiatingCommandLine)
	putString(m, "register-driver", o.RegisterDriver)
	putString(m, "revision", o.Revision)
	if o.CustomOrigin != nil {
		m["custom-origin"] = dbus.MakeVariant(customOriginTuple(*o.CustomOrigin))
	}
	return m
}

// Modifiers are the first argument of UpdateDeployment (reference §4.2); layerd uses only
// these.
type Modifiers struct {
	SetRefspec   string
	SetRevision  string
	CustomOrigin *CustomOrigin
}

func (m Modifiers) vardict() map[string]dbus.Variant {
	d := map[string]dbus.Variant{}
	putString(d, "set-refspec", m.SetRefspec)
	putString(d, "set-revision", m.SetRevision)
	if m.CustomOrigin != nil {
		d["custom-origin"] = dbus.MakeVariant(customOriginTuple(*m.CustomOrigin))
	}
	return d
}

// FinalizeOptions are the options of FinalizeDeployment besides the checksum (§4.4).
type FinalizeOptions struct {
	AllowUnlocked        bool
	AllowMissingChecksum bool
	// InitiatingCommandLine is used as the title.
	InitiatingCommandLine string
	Progress              ProgressFunc
}

func (o FinalizeOptions) vardict(checksum string) map[string]dbus.Variant {
	m := map[string]dbus.Variant{}
	putString(m, "checksum", checksum)
	putBool(m, "allow-missing-checksum", o.AllowMissingChecksum)
	putBool(m, "allow-unlocked", o.AllowUnlocked)
	putString(m, "initiating-command-line", o.InitiatingCommandLine)
	return m
}

// RollbackOptions are the options of Rollback; only reboot is read by the daemon.
type RollbackOptions struct {
	Reboot   bool
	Progress ProgressFunc
}

// CleanupOptions carry the progress callback of Cleanup (the method has no options).
type CleanupOptions struct {
	Progress ProgressFunc
}

// customOriginTuple is a (ss) on the wire.
type customOriginTuple struct {
	URL         string
	Description string
}

func putBool(m map[string]dbus.Variant, key string, v bool) {
	if v {
		m[key] = dbus.MakeVariant(true)
	}
}

func putString(m map[string]dbus.Variant, key, v string) {
	if v != "" {
		m[key] = dbus.MakeVariant(v)
	}
}
