package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/nodestatus"
)

// NodesSchemaVersion is the schemaVersion of `layerd nodes --json` (docs/cli.md).
const NodesSchemaVersion = 1

// NodesReport is the stable JSON output of `layerd nodes --json`.
type NodesReport struct {
	SchemaVersion int        `json:"schemaVersion"`
	Nodes         []NodeInfo `json:"nodes"`
}

// NodeInfo is one node of a NodesReport: the protocol as nodestatus.Read reads it, plus the
// reboot slots of the node's pool.
type NodeInfo struct {
	Name          string `json:"name"`
	Pool          string `json:"pool"`
	CurrentImage  string `json:"currentImage,omitempty"`
	DesiredImage  string `json:"desiredImage,omitempty"`
	DesiredDigest string `json:"desiredDigest,omitempty"`
	StagedImage   string `json:"stagedImage,omitempty"`
	State         string `json:"state,omitempty"`
	Phase         string `json:"phase,omitempty"`
	Reason        string `json:"reason,omitempty"`
	Message       string `json:"message,omitempty"`
	// Slot is the name of the slot Lease this node holds, "" when none.
	Slot string `json:"slot,omitempty"`
	// SlotHolders are the nodes holding a slot Lease of this node's pool, sorted by slot index.
	SlotHolders []string `json:"slotHolders"`
	// LastTransition is the node's layerd.dev/last-transition (RFC 3339), omitted when absent.
	LastTransition *time.Time `json:"lastTransition,omitempty"`
}

type nodesFlags struct {
	selector, kubeconfig, namespace string
	json                            bool
}

// newNodesCmd is `layerd nodes`: the cluster's nodes with their pool, images, state, phase,
// reason and slot holder, from one LIST of Nodes and one LIST of slot Leases.
func newNodesCmd() *cobra.Command {
	var f nodesFlags
	cmd := &cobra.Command{
		Use:   "nodes",
		Short: "Show the cluster's nodes: pool, current and desired image, state, phase, reason, slot holder",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			if f.namespace == "" {
				return &usageError{errors.New("--namespace is empty")}
			}
			if f.selector != "" {
				if _, err := metav1.ParseToLabelSelector(f.selector); err != nil {
					return &usageError{fmt.Errorf("--selector: %w", err)}
				}
			}
			client, err := nodesClient(f.kubeconfig)
			if err != nil {
				return err
			}
			rep, err := readNodes(ctx, client, f.selector, f.namespace)
			if err != nil {
				return err
			}
			if f.json {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return writeNodesTable(cmd.OutOrStdout(), rep, time.Now())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.selector, "selector", "l", "", "label selector of the nodes to show (default: all)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default $KUBECONFIG, ~/.kube/config, else in-cluster)")
	fl.StringVar(&f.namespace, "namespace", "layerd-system", "namespace of the reboot-slot Leases")
	fl.BoolVar(&f.json, "json", false, "print JSON (schema in docs/cli.md)")
	return cmd
}

func nodesClient(kubeconfig string) (kubernetes.Interface, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "layerd-nodes"
	return kubernetes.NewForConfig(cfg)
}

// readNodes lists the nodes matching selector and the slot Leases in namespace.
func readNodes(ctx context.Context, client kubernetes.Interface, selector, namespace string) (*NodesReport, error) {
	nodes, err := client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	leases, err := client.CoordinationV1().Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: coord.LabelSlotPool})
	if err != nil {
		return nil, fmt.Errorf("listing reboot slots in %s: %w", namespace, err)
	}
	type slot struct {
		index        int
		name, holder string
	}
	byPool := map[string][]slot{}
	heldBy := map[string]string{}
	for _, l := range leases.Items {
		pool := l.Labels[coord.LabelSlotPool]
		i, err := strconv.Atoi(l.Labels[coord.LabelSlotIndex])
		if err != nil || l.Name != coord.LeaseName(pool, i) || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			continue // not a slot layerd made, or a free one
		}
		byPool[pool] = append(byPool[pool], slot{i, l.Name, *l.Spec.HolderIdentity})
		if _, ok := heldBy[*l.Spec.HolderIdentity]; !ok {
			heldBy[*l.Spec.HolderIdentity] = l.Name
		}
	}
	rep := &NodesReport{SchemaVersion: NodesSchemaVersion, Nodes: []NodeInfo{}}
	for i := range nodes.Items {
		n := &nodes.Items[i]
		s := nodestatus.Read(n)
		info := NodeInfo{
			Name: n.Name, Pool: s.Pool, CurrentImage: s.CurrentImage, DesiredImage: s.DesiredImage,
			DesiredDigest: s.DesiredDigest, StagedImage: s.StagedImage, State: string(s.State),
			Phase: string(s.Phase), Reason: string(s.Reason), Message: s.Message, Slot: heldBy[n.Name],
			SlotHolders: []string{},
		}
		slots := byPool[s.Pool]
		slices.SortFunc(slots, func(a, b slot) int { return a.index - b.index })
		for _, sl := range slots {
			info.SlotHolders = append(info.SlotHolders, sl.holder)
		}
		if !s.LastTransition.IsZero() {
			t := s.LastTransition.UTC()
			info.LastTransition = &t
		}
		rep.Nodes = append(rep.Nodes, info)
	}
	slices.SortFunc(rep.Nodes, func(a, b NodeInfo) int { return strings.Compare(a.Name, b.Name) })
	return rep, nil
}

func writeNodesTable(out io.Writer, rep *NodesReport, now time.Time) error {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPOOL\tCURRENT\tDESIRED\tSTATE\tPHASE\tREASON\tSLOT\tAGE")
	for _, n := range rep.Nodes {
		age := "-"
		if n.LastTransition != nil {
			age = duration.HumanDuration(now.Sub(*n.LastTransition))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Pool, dash(shortDigest(n.CurrentImage)),
			dash(n.DesiredImage), dash(n.State), dash(n.Phase), dash(n.Reason), dash(strings.Join(n.SlotHolders, ",")), age)
	}
	return tw.Flush()
}

// shortDigest shortens an image reference or digest to its algorithm and first 12 hex digits
// ("sha256:0123456789ab"); a value without a digest is returned as is.
func shortDigest(ref string) string {
	i := strings.LastIndex(ref, "sha256:")
	if i < 0 {
		return ref
	}
	d := ref[i:]
	if len(d) > len("sha256:")+12 {
		d = d[:len("sha256:")+12]
	}
	return d
}
