package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/version"
)

// usageError marks bad command-line usage (exit code 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// exitError carries an explicit exit code (e.g. 1 for "image rejected") with an optional message.
type exitError struct {
	code int
	msg  string
}

func (e *exitError) Error() string { return fmt.Sprintf("exit %d: %s", e.code, e.msg) }

func newRootCmd(stdout, stderr io.Writer, log *zap.Logger) *cobra.Command {
	root := &cobra.Command{
		Use:           "layerd",
		Short:         "Node agent that applies layered OS images to image-based Linux hosts",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err} })
	root.AddCommand(newVersionCmd(), newStatusCmd(openRPMOSTreeStatus), newImageCmd(log))
	root.AddCommand(newAgentCmd(stderr))
	root.AddCommand(newNodesCmd(), newOnceCmd(log, openRPMOSTreeHost))
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of layerd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintf(cmd.OutOrStdout(), "layerd %s (commit %s, %s, %s/%s)\n",
				version.Version, version.Commit(), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}
