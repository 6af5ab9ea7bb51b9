// Package agent is layerd's update loop: it watches the agent's own Node, observes rpm-ostree and
// the reboot slot, asks the state machine (package daemon) what to do, and executes the Effects
// it returns against their owners, each Effect one method of one owner:
//
//	image      Resolve, Verify, Validate               (Verifier)
//	rpmostree  Stage, AttachTxn, CancelTxn,
//	           CleanupPending, Finalize               (Host)
//	nodestatus Report, RecordDigest, ClearDigest,
//	           ClearStaged, AckRetry, RecordBootID    (StatusWriter)
//	coord      AcquireSlot, ReleaseSlot               (Slots)
//	drain      Cordon, Uncordon, Drain                (Drainer; Cordon/Uncordon also record
//	                                                   cordoned-by through the StatusWriter)
//	systemd    CheckInhibitors                        (Inhibitors)
//	hostfs     PreviewHost, ApplyEtcPolicy,
//	           RestoreEtc, CreateMissingVar           (HostFS; Warn through the StatusWriter)
//
// The loop follows the contract of package daemon: Step with the zero State at start (the
// machine derives it from the Node, rpm-ostree and the Lease), execute the Effects in order in
// the background, feed the Outcome of the last one into the next Step, step again on a Node
// change, at the end of the effects, or after Decision.RetryAfter. While a long effect runs, a
// Node change is stepped with Observed.InFlight so a new desired-image can interrupt it.
package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
)

// Stepper is the update state machine (*daemon.Machine).
type Stepper interface {
	Step(cur daemon.State, obs daemon.Observed) daemon.Decision
}

// StatusWriter is the single writer of the Node's layerd annotations (*nodestatus.Writer).
type StatusWriter interface {
	SetWorking(ctx context.Context, phase nodestatus.Phase, message string) error
	SetStaged(ctx context.Context, stagedImage, message string) error
	SetDone(ctx context.Context, currentImage string) error
	SetDoneOnRef(ctx context.Context, ref string) error
	SetDegraded(ctx context.Context, code reason.Code, message string) error
	SetDesiredDigest(ctx context.Context, r nodestatus.Resolved) error
	ClearDesiredDigest(ctx context.Context) error
	ClearStaged(ctx context.Context) error
	AckRetry(ctx context.Context, value string) error
	RecordRebootBootID(ctx context.Context, bootID string) error
	SetCordonedBy(ctx context.Context) error
	ClearCordonedBy(ctx context.Context) error
	Warn(ctx context.Context, code reason.Code, message string) error
}

// Slots are the pool's reboot slots (*coord.Slots).
type Slots interface {
	Acquire(ctx context.Context, node, pool string) (coord.Slot, error)
	Release(ctx context.Context, slot coord.Slot) error
	Held(ctx context.Context, node string) (coord.Slot, bool, error)
	Keep(ctx context.Context, slot coord.Slot) error
	// Config reads the pool policy ConfigMap (etcPolicy and varPolicy are read from it).
	Config(ctx context.Context) (coord.Config, error)
}

// Drainer cordons, drains and uncordons the node (*drain.Drainer).
type Drainer interface {
	Cordon(ctx context.Context) (cordonedByUs bool, err error)
	Uncordon(ctx context.Context) error
	Drain(ctx context.Context) error
}

// Host is rpm-ostree on the node (*rpmostree.Client).
type Host interface {
	Status(ctx context.Context) (*rpmostree.Status, error)
	StageImage(ctx context.Context, pinnedRef string, opts rpmostree.RebaseOptions) (*rpmostree.StageResult, error)
	Attach(ctx context.Context, address string, progress rpmostree.ProgressFunc) error
	Cleanup(ctx context.Context, elements []string, opts rpmostree.CleanupOptions) error
	FinalizeDeployment(ctx context.Context, checksum string, opts rpmostree.FinalizeOptions) error
}

// HostFS is the host's /etc and /var against its deployments (*hostfs.Host, docs/hostfs.md).
type HostFS interface {
	PreviewEtc(ctx context.Context, booted, staged hostfs.DeploymentRef) (*hostfs.EtcReport, error)
	PreviewVar(ctx context.Context, staged hostfs.DeploymentRef) (*hostfs.VarReport, error)
	EtcDrift(ctx context.Context, booted hostfs.DeploymentRef) (*hostfs.EtcReport, error)
	EtcBackupAndApply(ctx context.Context, rep *hostfs.EtcReport, digest string) (*hostfs.EtcBackup, error)
	RestoreEtc(ctx context.Context, digest string) (*hostfs.EtcBackup, error)
	EtcBackups() ([]*hostfs.EtcBackup, error)
	CreateMissingVar(ctx context.Context, rep *hostfs.VarReport) ([]hostfs.VarResult, error)
	NewReport(etc *hostfs.EtcReport, vr *hostfs.VarReport, results []hostfs.VarResult) *hostfs.Report
}

// Disk tells the free space of the sysroot staging writes into.
type Disk interface {
	Free(ctx context.Context) (uint64, error)
}

// Metrics are the agent's Prometheus metrics (*metrics.Metrics).
type Metrics interface {
	SetPhase(p nodestatus.Phase, since time.Time)
	SetState(s nodestatus.State)
	ObservePhaseDuration(p nodestatus.Phase, d time.Duration)
	Error(c reason.Code)
	Rebooted()
	AddStagingBytes(n uint64)
	SetInfo(booted, staged string)
	SetEtcDriftFiles(n int)
}

// Health is what /healthz and /readyz answer from (*metrics.Health).
type Health interface {
	Beat(now time.Time)
	SetReady(ready bool, reason string)
}

// Notifier tells systemd the agent's status line (systemd.Notifier; a no-op outside systemd).
type Notifier interface {
	Status(line string) error
}

// Deps are the owners the agent talks to. Every field is required.
type Deps struct {
	Kube       kubernetes.Interface
	Machine    Stepper
	Status     StatusWriter
	Slots      Slots
	Drainer    Drainer
	Images     image.Verifier
	Host       Host
	Disk       Disk
	HostFS     HostFS
	Updaters   updaters.Checker
	Finalize   systemd.FinalizeLog
	Inhibitors systemd.Inhibitors
	Metrics    Metrics
	Health     Health
	Notifier   Notifier
	Clock      clock.Clock
	Log        *zap.Logger
}

// Config says which node the agent runs for and how it paces itself.
type Config struct {
	// NodeName is the agent's own Node.
	NodeName string
	// HeartbeatInterval is how often the loop beats Health while idle (default 10s).
	HeartbeatInterval time.Duration
	// RetryInterval spaces retries of failed observations (the API server, rpm-ostree) and of
	// the start-up reads (default 2s).
	RetryInterval time.Duration
	// CancelGrace is how long CancelTxn follows a transaction it did not start before it asks
	// rpm-ostree to cancel it (default 200ms).
	CancelGrace time.Duration
	// Initiator is the transaction title other rpm-ostree clients see (default "layerd agent").
	Initiator string
	// RegisterDriver registers the agent with rpm-ostree as the host's update driver
	// (register-driver=layerd) on every Stage. Off for hosts whose rpm-ostreed cannot find the
	// caller's systemd unit (pods under the kubelet's cgroupfs driver).
	RegisterDriver bool
	// ReportPath is where the host report of the /etc and /var preview is written (default
	// DefaultReportPath).
	ReportPath string
}

// DefaultReportPath is the host report file: the host's /run is the DaemonSet pod's /run.
const DefaultReportPath = "/run/layerd/report.json"

// Agent is the update loop of one node.
type Agent struct {
	d   Deps
	cfg Config
	log *zap.Logger

	kick chan struct{}

	mu       sync.Mutex
	slot     *coord.Slot
	stopKeep context.CancelFunc
	resolved map[string]*image.Resolved // by pinned reference, as Resolve returned it
	stagedAt uint64                     // DownloadProgress bytes seen in the current Stage
	problem  string                     // the last pool policy problem logged
	// lastPolicy is the pool policy last read; it stands while layerd-config cannot be read.
	lastPolicy daemon.Policy

	finalizeRead bool   // the previous boot's finalize error was read from the journal
	finalizeErr  string // what it said ("" when finalization did not fail)

	drift    sync.WaitGroup // the /etc drift measurement in the background
	driftMu  sync.Mutex
	drifting bool
}

// New returns the agent of cfg.NodeName, rejecting a missing dependency. It does no I/O.
func New(d Deps, cfg Config) (*Agent, error) {
	missing := map[string]bool{
		"Kube": d.Kube == nil, "Machine": d.Machine == nil, "Status": d.Status == nil,
		"Slots": d.Slots == nil, "Drainer": d.Drainer == nil, "Images": d.Images == nil,
		"Host": d.Host == nil, "Disk": d.Disk == nil, "HostFS": d.HostFS == nil,
		"Updaters": d.Updaters == nil, "Finalize": d.Finalize == nil, "Inhibitors": d.Inhibitors == nil,
		"Metrics": d.Metrics == nil, "Health": d.Health == nil, "Notifier": d.Notifier == nil, "Clock": d.Clock == nil,
		"Log": d.Log == nil,
	}
	var errs []error
	for _, name := range []string{"Kube", "Machine", "Status", "Slots", "Drainer", "Images", "Host", "Disk", "HostFS",
		"Updaters", "Finalize", "Inhibitors", "Metrics", "Health", "Notifier", "Clock", "Log"} {
		if missing[name] {
			errs = append(errs, fmt.Errorf("agent: nil dependency %s", name))
		}
	}
	if cfg.NodeName == "" {
		errs = append(errs, errors.New("agent: empty node name"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 2 * time.Second
	}
	if cfg.CancelGrace <= 0 {
		cfg.CancelGrace = 200 * time.Millisecond
	}
	if cfg.Initiator == "" {
		cfg.Initiator = "layerd agent"
	}
	if cfg.ReportPath == "" {
		cfg.ReportPath = DefaultReportPath
	}
	return &Agent{
		d: d, cfg: cfg, log: d.Log.With(zap.String("node", cfg.NodeName)),
		kick: make(chan struct{}, 1), resolved: map[string]*image.Resolved{},
	}, nil
}

// poke asks the loop to step again (a Node change, a lost slot).
func (a *Agent) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}
