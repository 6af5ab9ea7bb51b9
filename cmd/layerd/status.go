package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"layerd.dev/layerd/rpmostree"
)

// statusReader is what `layerd status` needs from rpm-ostree.
type statusReader interface {
	Status(ctx context.Context) (*rpmostree.Status, error)
	Close() error
}

// openStatusReader opens a statusReader; openRPMOSTreeStatus is the production one.
type openStatusReader func(ctx context.Context) (statusReader, error)

// openRPMOSTreeStatus connects to rpm-ostreed on the system bus (DBUS_SYSTEM_BUS_ADDRESS).
func openRPMOSTreeStatus(ctx context.Context) (statusReader, error) {
	return rpmostree.New(ctx, rpmostree.Options{})
}

// newStatusCmd is `layerd status [--json] [--verbose]`: this host's booted, staged and rollback
// deployments as a table, or as bootc-compatible JSON (bootc status --format=json) with a
// "layerd" member; then the agent's last /etc and /var report and the /etc drift.
func newStatusCmd(open openStatusReader) *cobra.Command {
	var asJSON bool
	var ho statusHostOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show this host's deployments: booted, staged and rollback",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) (err error) {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			r, err := open(ctx)
			if err != nil {
				return fmt.Errorf("connecting to rpm-ostree: %w", err)
			}
			defer func() { err = errors.Join(err, r.Close()) }()
			st, err := r.Status(ctx)
			if err != nil {
				return fmt.Errorf("reading rpm-ostree status: %w", err)
			}
			hs := readHostStatus(ctx, st, ho)
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(statusJSON{BootcHost: rpmostree.ToBootcHost(st), Layerd: hs})
			}
			if err := writeStatusTable(cmd.OutOrStdout(), st); err != nil {
				return err
			}
			return writeHostStatus(cmd.OutOrStdout(), hs, ho.verbose)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&asJSON, "json", false, "print JSON compatible with `bootc status --format=json`, with a \"layerd\" member")
	fl.BoolVarP(&ho.verbose, "verbose", "v", false, "list every path: conflicts, /var paths not applied or created, /etc drift")
	fl.StringVar(&ho.hostRoot, "host-root", "/", "the host's root (its /etc, /var and sysroot); /host in the agent's pod")
	fl.StringVar(&ho.report, "report", defaultReportPath, "the agent's host report file")
	return cmd
}

func writeStatusTable(out io.Writer, st *rpmostree.Status) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ROLE\tIMAGE\tDIGEST\tVERSION\tTIMESTAMP\tCHECKSUM\tSERIAL")
	for _, row := range []struct {
		role string
		d    *rpmostree.Deployment
	}{{"staged", st.Staged}, {"booted", st.Booted}, {"rollback", st.Rollback}} {
		if row.d == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\t-\n", row.role)
			continue
		}
		d := row.d
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", row.role, imageOf(d), dash(d.ContainerImageReferenceDigest),
			dash(d.Version), timestampOf(d), d.Checksum, d.Serial)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if t := st.ActiveTransaction; t != nil {
		_, err := fmt.Fprintf(out, "\nActive transaction: %s by %s (%s)\n", t.Method, t.Sender, st.ActiveTransactionPath)
		return err
	}
	return nil
}

func imageOf(d *rpmostree.Deployment) string {
	if ref, ok := rpmostree.ParseImageRefspec(d.ContainerImageReference); ok {
		return ref.Image
	}
	return dash(d.Origin)
}

func timestampOf(d *rpmostree.Deployment) string {
	if d.Timestamp == 0 {
		return "-"
	}
	return time.Unix(int64(d.Timestamp), 0).UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
