package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/rpmostree"
)

// onceHost is what `layerd once` needs from rpm-ostree.
type onceHost interface {
	StageImage(ctx context.Context, pinnedRef string, opts rpmostree.RebaseOptions) (*rpmostree.StageResult, error)
	FinalizeDeployment(ctx context.Context, checksum string, opts rpmostree.FinalizeOptions) error
	Close() error
}

// openOnceHost opens a onceHost; openRPMOSTreeHost is the production one.
type openOnceHost func(ctx context.Context, log *zap.Logger) (onceHost, error)

// openRPMOSTreeHost connects to rpm-ostreed on the system bus (DBUS_SYSTEM_BUS_ADDRESS).
func openRPMOSTreeHost(ctx context.Context, log *zap.Logger) (onceHost, error) {
	return rpmostree.New(ctx, rpmostree.Options{Log: log})
}

// onceInitiator is the initiating-command-line of the transactions `layerd once` starts.
const onceInitiator = "layerd once"

// newOnceCmd is `layerd once IMAGE [--reboot]`: host mode without Kubernetes. The image is
// resolved, verified and validated exactly as `layerd image inspect` does (the inspect command
// runs underneath, its trust flags shared), then staged by digest.
func newOnceCmd(log *zap.Logger, open openOnceHost) *cobra.Command {
	if log == nil {
		log = zap.NewNop()
	}
	inspect := newImageInspectCmd(log)
	var reboot bool
	cmd := &cobra.Command{
		Use:   "once IMAGE",
		Short: "Resolve, verify, validate and stage an OS image on this host, optionally reboot into it",
		Long: `Resolve IMAGE to the manifest digest for this host, verify its signature with the containers
policy, validate it is a bootable OS image, then stage exactly that digest with rpm-ostree.
Without --reboot the staged deployment is finalization-locked: it is booted only when
something finalizes it. With --reboot it is finalized and rpm-ostree reboots the host.

Exit status: 0 staged (or already staged), 1 rejected or failed (the reason code is printed,
nothing is staged for a rejected image), 2 bad usage (including an invalid IMAGE).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{fmt.Errorf("expected exactly one IMAGE, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runOnce(cmd, log, inspect, open, args[0], reboot)
		},
	}
	fl := cmd.Flags()
	for _, name := range []string{"policy", "registries-d", "registries-conf", "authfile", "arch"} {
		fl.AddFlag(inspect.Flags().Lookup(name))
	}
	fl.BoolVar(&reboot, "reboot", false, "finalize the staged deployment: rpm-ostree reboots the host into it")
	return cmd
}

func runOnce(cmd *cobra.Command, log *zap.Logger, inspect *cobra.Command, open openOnceHost, ref string, reboot bool) (err error) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	out := cmd.OutOrStdout()
	rep, err := inspectForOnce(ctx, inspect, ref)
	if rep != nil {
		if werr := rep.WriteText(out); werr != nil {
			return &exitError{code: exitRejected, msg: "writing report: " + werr.Error()}
		}
	}
	if err != nil {
		return err
	}

	host, err := open(ctx, log)
	if err != nil {
		return &exitError{code: 1, msg: "connecting to rpm-ostree: " + err.Error()}
	}
	defer func() {
		if cerr := host.Close(); cerr != nil && err == nil {
			err = &exitError{code: 1, msg: "closing the rpm-ostree client: " + cerr.Error()}
		}
	}()
	fmt.Fprintf(out, "staging %s\n", rep.Pinned)
	res, err := host.StageImage(ctx, rep.Pinned, rpmostree.RebaseOptions{
		LockFinalization:      !reboot,
		InitiatingCommandLine: onceInitiator,
		Progress:              progressPrinter(out),
	})
	if err != nil {
		return &exitError{code: 1, msg: "StageFailed: " + err.Error()}
	}
	deployment := "-"
	if res.Deployment != nil {
		deployment = res.Deployment.ID
	}
	if res.Started {
		fmt.Fprintf(out, "staged %s as deployment %s\n", rep.ManifestDigest, deployment)
	} else {
		fmt.Fprintf(out, "already staged: %s is deployment %s\n", rep.ManifestDigest, deployment)
	}
	if res.Deployment != nil && res.Deployment.Booted {
		fmt.Fprintf(out, "already booted: %s\n", rep.ManifestDigest)
		return nil
	}
	if !reboot {
		fmt.Fprintln(out, "finalization locked: run `layerd once --reboot` with the same image to reboot into it")
		return nil
	}
	fmt.Fprintf(out, "finalizing %s: rebooting\n", rep.ManifestDigest)
	if err := host.FinalizeDeployment(ctx, rep.ManifestDigest.String(), rpmostree.FinalizeOptions{
		AllowUnlocked:         true,
		InitiatingCommandLine: onceInitiator,
		Progress:              progressPrinter(out),
	}); err != nil {
		return &exitError{code: 1, msg: err.Error()}
	}
	return nil
}

// inspectForOnce runs `layerd image inspect --json IMAGE` (its flags already parsed through
// `layerd once`) and returns its report. A rejected image returns the report and an *exitError
// with an empty message (the text report ends with the reason); an invalid IMAGE a *usageError.
func inspectForOnce(ctx context.Context, inspect *cobra.Command, ref string) (*image.Report, error) {
	var buf bytes.Buffer
	inspect.SetOut(&buf)
	inspect.SetContext(ctx)
	if err := inspect.Flags().Set("json", "true"); err != nil {
		return nil, err
	}
	ierr := inspect.RunE(inspect, []string{ref})
	var ue *usageError
	if errors.As(ierr, &ue) {
		return nil, ierr
	}
	var rep image.Report
	if err := json.Unmarshal(buf.Bytes(), &rep); err != nil {
		return nil, &exitError{code: exitRejected, msg: errors.Join(ierr, fmt.Errorf("reading the inspect report: %w", err)).Error()}
	}
	if ierr != nil || !rep.Accepted {
		return &rep, &exitError{code: exitRejected}
	}
	return &rep, nil
}

// progressPrinter prints a transaction's human-readable events, one per line.
func progressPrinter(out io.Writer) rpmostree.ProgressFunc {
	return func(e rpmostree.Event) {
		switch e := e.(type) {
		case rpmostree.Message:
			fmt.Fprintf(out, "  %s\n", e.Text)
		case rpmostree.TaskBegin:
			fmt.Fprintf(out, "  %s...\n", e.Text)
		case rpmostree.TaskEnd:
			fmt.Fprintf(out, "  %s\n", e.Text)
		case rpmostree.PercentProgress:
			fmt.Fprintf(out, "  %s %d%%\n", e.Text, e.Percent)
		}
	}
}
