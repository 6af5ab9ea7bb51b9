package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
)

// exitRejected is the exit code of `layerd image inspect` when the image is rejected or cannot
// be inspected (docs/image.md); bad usage is a *usageError (exit code 2, root.go).
const exitRejected = 1

// newImageCmd returns `layerd image` with its `inspect` subcommand. log may be nil.
func newImageCmd(log *zap.Logger) *cobra.Command {
	if log == nil {
		log = zap.NewNop()
	}
	cmd := &cobra.Command{
		Use:   "image",
		Short: "Inspect OS images the way the agent will before staging them",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return &usageError{errors.New("missing subcommand: layerd image inspect IMAGE")}
		},
	}
	cmd.AddCommand(newImageInspectCmd(log))
	return cmd
}

type inspectFlags struct {
	policy, registriesD, registriesConf, authFile, arch string
	json                                                bool
	timeout                                             time.Duration
}

func newImageInspectCmd(log *zap.Logger) *cobra.Command {
	var f inspectFlags
	cmd := &cobra.Command{
		Use:   "inspect IMAGE",
		Short: "Resolve, verify and validate an OS image and print the verdict",
		Long: `Resolve IMAGE (tag or digest) to the per-arch manifest digest for this node, evaluate the
signature policy against exactly that digest, and check that it is a bootable OS image for
this node. Only manifests, the config and signatures are fetched, never layers.

Exit status: 0 accepted, 1 rejected or failed (the reason code is printed), 2 bad usage
(including an IMAGE that is not a valid reference).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) != 1 {
				return &usageError{fmt.Errorf("expected exactly one IMAGE, got %d arguments", len(args))}
			}
			return nil
		},
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runImageInspect(cmd, log, f, args[0])
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.policy, "policy", "", "signature policy (default /etc/containers/policy.json)")
	fl.StringVar(&f.registriesD, "registries-d", "", "registries.d directory: where signatures are looked up (default /etc/containers/registries.d)")
	fl.StringVar(&f.registriesConf, "registries-conf", "", "registries.conf: mirrors, insecure, blocked, short names (default $CONTAINERS_REGISTRIES_CONF or /etc/containers/registries.conf)")
	fl.StringVar(&f.authFile, "authfile", "", "registry credentials, containers auth.json or docker config.json format")
	fl.StringVar(&f.arch, "arch", "", "node architecture (default this machine's; x86_64/aarch64 accepted)")
	fl.BoolVar(&f.json, "json", false, "print the report as JSON (schema in docs/image.md)")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "give up after this long, retries included")
	return cmd
}

func runImageInspect(cmd *cobra.Command, log *zap.Logger, f inspectFlags, ref string) error {
	if f.timeout <= 0 {
		return &usageError{fmt.Errorf("--timeout must be positive, got %s", f.timeout)}
	}
	client, err := image.New(image.Options{
		PolicyPath:         f.policy,
		RegistriesDDir:     f.registriesD,
		RegistriesConfPath: f.registriesConf,
		AuthFilePath:       f.authFile,
		Arch:               f.arch,
		Logger:             log,
	})
	if err != nil {
		return &usageError{err}
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
	defer cancel()
	rep, inspectErr := client.Inspect(ctx, ref)
	if err := writeReport(cmd, rep, f.json); err != nil {
		return &exitError{code: exitRejected, msg: "writing report: " + err.Error()}
	}
	if code, _ := reason.Of(inspectErr); code == reason.InvalidReference {
		return &usageError{inspectErr} // the IMAGE argument itself is wrong
	}
	if inspectErr != nil {
		msg := "" // the text report already ends with the reason and message
		if f.json {
			msg = inspectErr.Error()
		}
		return &exitError{code: exitRejected, msg: msg}
	}
	return nil
}

func writeReport(cmd *cobra.Command, rep *image.Report, asJSON bool) error {
	out := cmd.OutOrStdout()
	if !asJSON {
		return rep.WriteText(out)
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return &usageError{fmt.Errorf("unknown subcommand %q", args[0])}
	}
	return nil
}
