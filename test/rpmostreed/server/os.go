package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/godbus/dbus/v5"
)

// osMethods is org.projectatomic.rpmostree1.OS; the members layerd uses are implemented, the
// rest (os_stubs.go) exist with their signatures and fail with NotSupported.
type osMethods struct{ o *osObject }

// Titles used when no initiating-command-line is given.
const (
	titleDeploy   = "new-deployment"
	titleRollback = "rollback"
	titleCleanup  = "cleanup"
	titleFinalize = "finalize-deployment"
)

// Rebase switches the origin: UpdateDeployment({set-refspec, set-revision from "revision"}),
// allow-downgrade defaulting to true. packages is ignored, as in current rpm-ostree.
func (m osMethods) Rebase(sender dbus.Sender, options map[string]dbus.Variant, refspec string, packages []string) (string, *dbus.Error) {
	opts := vardict(options)
	mods := vardict{"set-refspec": dbus.MakeVariant(refspec)}
	if rev := opts.str("revision"); rev != "" {
		mods["set-revision"] = dbus.MakeVariant(rev)
	}
	return m.deploy("Rebase", sender, []any{options, refspec, packages}, mods, opts, true)
}

// Deploy deploys a revision of the current origin.
func (m osMethods) Deploy(sender dbus.Sender, revision string, options map[string]dbus.Variant) (string, *dbus.Error) {
	mods := vardict{"set-revision": dbus.MakeVariant(revision)}
	return m.deploy("Deploy", sender, []any{revision, options}, mods, vardict(options), true)
}

// Upgrade pulls the newest content of the current origin.
func (m osMethods) Upgrade(sender dbus.Sender, options map[string]dbus.Variant) (string, *dbus.Error) {
	return m.deploy("Upgrade", sender, []any{options}, vardict{}, vardict(options), false)
}

// UpdateDeployment is the general form of the deploy family.
func (m osMethods) UpdateDeployment(sender dbus.Sender, modifiers, options map[string]dbus.Variant) (string, *dbus.Error) {
	return m.deploy("UpdateDeployment", sender, []any{modifiers, options}, vardict(modifiers), vardict(options), false)
}

// unsupportedModifiers would need package layering, which the stand-in does not do.
var unsupportedModifiers = []string{
	"install-packages", "uninstall-packages", "install-modules", "uninstall-modules", "enable-modules",
	"disable-modules", "override-remove-packages", "override-reset-packages", "override-replace-packages",
	"install-local-packages", "install-local-fileoverride-packages", "override-replace-local-packages", "treefile",
}

func (m osMethods) deploy(method string, sender dbus.Sender, args []any, mods, opts vardict, allowDowngradeDefault bool) (string, *dbus.Error) {
	refspec, revision := mods.str("set-refspec"), mods.str("set-revision")
	req := StageRequest{
		Refspec:          refspec,
		Revision:         revision,
		LockFinalization: opts.bool("lock-finalization"),
		DownloadOnly:     opts.bool("download-only") || opts.bool("dry-run"),
		CacheOnly:        opts.bool("cache-only"),
		AllowDowngrade:   opts.boolOr("allow-downgrade", allowDowngradeDefault || refspec != "" || revision != ""),
	}
	validate := func() error {
		// The same checks, in the same order, as rpm-ostree's deploy transaction.
		switch {
		case refspec == "" && opts.bool("skip-purge"):
			return errors.New("Can't specify skip-purge if not setting a new refspec")
		case (refspec != "" || revision != "") && opts.bool("no-pull-base"):
			return errors.New("Can't specify no-pull-base if setting a new refspec or revision")
		case opts.bool("cache-only") && opts.bool("download-only"):
			return errors.New("Can't specify cache-only and download-only")
		case opts.bool("dry-run") && opts.bool("download-only"):
			return errors.New("Can't specify dry-run and download-only")
		case opts.bool("apply-live"):
			return errors.New("rpm-ostreed stand-in: apply-live is not supported")
		}
		for _, key := range unsupportedModifiers {
			if _, ok := mods[key]; ok {
				return fmt.Errorf("rpm-ostreed stand-in: modifier %s is not supported", key)
			}
		}
		return nil
	}
	// register-driver is recorded after the checks and before any other work; an empty
	// revision then means "register only" (how zincati registers: `deploy --register-driver
	// Zincati ""`).
	driver := opts.str("register-driver")
	rev, hasRevision := mods["set-revision"]
	registerOnly := driver != "" && hasRevision && rev.Signature().String() == "s" && rev.Value() == ""
	s := m.o.s
	return s.begin(txnSpec{
		method: method, sender: string(sender), osPath: m.o.path, args: args,
		title:  titleOr(opts, titleDeploy),
		reboot: opts.bool("reboot") && !req.DownloadOnly && !registerOnly,
		work: func(ctx context.Context, p Progress) error {
			if err := validate(); err != nil {
				return err
			}
			if driver != "" {
				if err := s.recordDriver(driver, string(sender)); err != nil {
					return err
				}
				if registerOnly {
					p.Message(msgRegisterOnly)
					return nil
				}
			}
			return s.backend.Stage(ctx, req, p)
		},
	})
}

// Rollback makes the rollback deployment boot next; only "reboot" is read.
func (m osMethods) Rollback(sender dbus.Sender, options map[string]dbus.Variant) (string, *dbus.Error) {
	opts := vardict(options)
	backend := m.o.s.backend
	return m.o.s.begin(txnSpec{
		method: "Rollback", sender: string(sender), osPath: m.o.path, args: []any{options},
		title: titleRollback, reboot: opts.bool("reboot"),
		work: func(ctx context.Context, p Progress) error { return backend.Rollback(ctx, p) },
	})
}

// validCleanup are the Cleanup elements (reference §4.3).
var validCleanup = map[string]bool{"base": true, "pending-deploy": true, "rollback-deploy": true, "repomd": true}

// Cleanup removes deployments or caches; an unknown element fails the call itself.
func (m osMethods) Cleanup(sender dbus.Sender, elements []string) (string, *dbus.Error) {
	for _, e := range elements {
		if !validCleanup[e] {
			return "", failedError("Invalid cleanup type: " + e)
		}
	}
	backend := m.o.s.backend
	return m.o.s.begin(txnSpec{
		method: "Cleanup", sender: string(sender), osPath: m.o.path, args: []any{elements},
		title: titleCleanup,
		work:  func(ctx context.Context, _ Progress) error { return backend.Cleanup(ctx, elements) },
	})
}

// FinalizeDeployment unlocks the staged deployment (validated by the backend) and reboots.
func (m osMethods) FinalizeDeployment(sender dbus.Sender, options map[string]dbus.Variant) (string, *dbus.Error) {
	opts := vardict(options)
	req := FinalizeRequest{
		Checksum:             opts.str("checksum"),
		AllowMissingChecksum: opts.bool("allow-missing-checksum"),
		AllowUnlocked:        opts.bool("allow-unlocked"),
	}
	backend := m.o.s.backend
	return m.o.s.begin(txnSpec{
		method: "FinalizeDeployment", sender: string(sender), osPath: m.o.path, args: []any{options},
		title: titleOr(opts, titleFinalize), reboot: true,
		work: func(ctx context.Context, _ Progress) error { return backend.Finalize(ctx, req) },
	})
}

// AutomaticUpdateTrigger reports automatic updates as off when the policy is "none".
func (m osMethods) AutomaticUpdateTrigger(_ map[string]dbus.Variant) (bool, string, *dbus.Error) {
	if m.o.s.opts.AutomaticUpdatePolicy == "none" {
		return false, "", nil
	}
	return false, "", notImplemented(OSIface, "AutomaticUpdateTrigger")
}

func titleOr(opts vardict, placeholder string) string {
	if t := opts.str("initiating-command-line"); t != "" {
		return t
	}
	return placeholder
}
