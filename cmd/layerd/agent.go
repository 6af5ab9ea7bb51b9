package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/daemon/agent"
	"layerd.dev/layerd/pkg/coord"
	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/hostfs"
	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/logging"
	"layerd.dev/layerd/pkg/metrics"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/updaters"
	"layerd.dev/layerd/rpmostree"
	"layerd.dev/layerd/systemd"
)

// nodeNameEnv is where the DaemonSet puts spec.nodeName (downward API).
const nodeNameEnv = "NODE_NAME"

// defaultSystemBus is the system bus in a DaemonSet pod: the host's /run is mounted at /run.
const defaultSystemBus = "unix:path=/run/dbus/system_bus_socket"

// agentFlags are the flags of `layerd agent`.
type agentFlags struct {
	nodeName, kubeconfig, hostRoot                  string
	policy, registriesD, registriesConf, pullSecret string
	namespace, metricsAddr, healthAddr              string
	logFormat, logJournal                           string
	drainTimeout, slotLease                         time.Duration
	hostfsMaxFiles, hostfsMaxBytes                  int64
	registerDriver                                  bool
}

// agentSettings are the flags checked and completed.
type agentSettings struct {
	agentFlags
	format  logging.Format
	journal bool
	sysroot string
}

func (f agentFlags) settings(getenv func(string) string, journalAvailable func() bool) (agentSettings, error) {
	s := agentSettings{agentFlags: f}
	if s.nodeName == "" {
		s.nodeName = getenv(nodeNameEnv)
	}
	if s.nodeName == "" {
		return s, &usageError{fmt.Errorf("--node-name is empty and %s is not set", nodeNameEnv)}
	}
	if s.namespace == "" {
		return s, &usageError{errors.New("--namespace is empty")}
	}
	var err error
	if s.format, err = logging.ParseFormat(f.logFormat); err != nil {
		return s, &usageError{fmt.Errorf("--log-format: %w", err)}
	}
	switch f.logJournal {
	case "on":
		s.journal = true
	case "off":
	case "auto":
		s.journal = journalAvailable()
	default:
		return s, &usageError{fmt.Errorf("--log-journal %q: want auto, on or off", f.logJournal)}
	}
	s.sysroot = filepath.Join(f.hostRoot, "sysroot")
	if f.hostfsMaxFiles < 0 || f.hostfsMaxBytes < 0 {
		return s, &usageError{fmt.Errorf("--hostfs-max-files %d, --hostfs-max-bytes %d: want ≥ 0", f.hostfsMaxFiles, f.hostfsMaxBytes)}
	}
	if f.drainTimeout <= 0 {
		return s, &usageError{fmt.Errorf("--drain-timeout %v: want a positive duration", f.drainTimeout)}
	}
	if f.slotLease < coord.MinLeaseDuration || f.slotLease%time.Second != 0 {
		return s, &usageError{fmt.Errorf("--slot-lease-duration %v: want whole seconds, at least %v", f.slotLease, coord.MinLeaseDuration)}
	}
	return s, nil
}

// newAgentCmd is `layerd agent`: the DaemonSet mode. It only wires the owners and runs the loop.
func newAgentCmd(stderr io.Writer) *cobra.Command {
	var f agentFlags
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the node agent: apply the image annotated as layerd.dev/desired-image on this Node",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := f.settings(os.Getenv, systemd.JournalAvailable)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runAgent(ctx, s, stderr)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.nodeName, "node-name", "", "this node's name (default $"+nodeNameEnv+", from the downward API)")
	fl.StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: the in-cluster ServiceAccount)")
	fl.StringVar(&f.hostRoot, "host-root", "/host", "where the host's root is mounted; the sysroot is read at <host-root>/sysroot")
	fl.StringVar(&f.policy, "policy", "", "containers signature policy (default /etc/containers/policy.json)")
	fl.StringVar(&f.registriesD, "registries-d", "", "containers registries.d directory (default /etc/containers/registries.d)")
	fl.StringVar(&f.registriesConf, "registries-conf", "", "containers registries.conf (default the library's)")
	fl.StringVar(&f.pullSecret, "pull-secret", "", "auth.json / dockerconfigjson with registry credentials")
	fl.StringVar(&f.namespace, "namespace", "layerd-system", "namespace of the reboot-slot Leases and the layerd-config ConfigMap")
	fl.StringVar(&f.metricsAddr, "metrics-addr", ":9100", "address of /metrics (empty: off)")
	fl.StringVar(&f.healthAddr, "health-addr", ":9101", "address of /healthz and /readyz (empty: off)")
	fl.StringVar(&f.logFormat, "log-format", string(logging.FormatJSON), "log format: json or console")
	fl.StringVar(&f.logJournal, "log-journal", "auto", "also log to journald: auto (when its socket exists), on or off")
	fl.DurationVar(&f.drainTimeout, "drain-timeout", drain.DefaultTimeout, "bound of one drain; a pool's drainTimeout in layerd-config wins")
	fl.DurationVar(&f.slotLease, "slot-lease-duration", coord.DefaultLeaseDuration, "leaseDurationSeconds of the reboot-slot Leases this agent holds (whole seconds, at least 3s; renewed every third)")
	fl.BoolVar(&f.registerDriver, "register-driver", true, "register with rpm-ostree as the host's update driver (register-driver=layerd) when staging; "+
		"turn off where rpm-ostreed cannot find the agent's systemd unit (pods under the kubelet's cgroupfs driver)")
	fl.Int64Var(&f.hostfsMaxFiles, "hostfs-max-files", hostfs.DefaultMaxFiles, "entries one /etc or /var preview may visit (0: the default)")
	fl.Int64Var(&f.hostfsMaxBytes, "hostfs-max-bytes", hostfs.DefaultMaxBytes, "file bytes one /etc or /var preview may read (0: the default)")
	return cmd
}

// runAgent builds the real owners and runs the agent until ctx ends.
func runAgent(ctx context.Context, s agentSettings, stderr io.Writer) error {
	var extra []zapcore.Core
	if s.journal {
		extra = append(extra, systemd.NewJournalCore(systemd.GoSystemdJournal{}, "layerd", zapcore.InfoLevel))
	}
	base := logging.New(logging.Options{Format: s.format, Level: zapcore.InfoLevel, Out: stderr, Extra: extra})
	defer func() { _ = base.Sync() }()               // stderr cannot be synced everywhere
	log := base.With(zap.String("node", s.nodeName)) // the owners' logs; the agent adds node itself

	restCfg, err := clientcmd.BuildConfigFromFlags("", s.kubeconfig)
	if err != nil {
		return fmt.Errorf("loading the Kubernetes client configuration: %w", err)
	}
	restCfg.UserAgent = "layerd-agent"
	kube, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("building the Kubernetes client: %w", err)
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, s.nodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", s.nodeName, err)
	}
	clk := clock.RealClock{}

	bus := os.Getenv("DBUS_SYSTEM_BUS_ADDRESS")
	if bus == "" {
		bus = defaultSystemBus
	}
	host, err := rpmostree.NewWithAddress(ctx, bus, rpmostree.Options{ClientID: "layerd", Log: log})
	if err != nil {
		return fmt.Errorf("connecting to rpm-ostree on %s: %w", bus, err)
	}
	defer func() { _ = host.Close() }() // the bus may be gone as the host reboots
	sysBus, err := systemd.ConnectSystemBus(bus)
	if err != nil {
		return fmt.Errorf("connecting to the system bus for logind: %w", err)
	}
	defer func() { _ = sysBus.Close() }()
	inhibitors, err := systemd.NewLogindInhibitors(sysBus)
	if err != nil {
		return err
	}
	units, err := systemd.NewSystemdUnits(sysBus)
	if err != nil {
		return err
	}
	others, err := updaters.New(updaters.Options{HostRoot: s.hostRoot, Units: units})
	if err != nil {
		return err
	}
	finalizeLog, err := systemd.NewJournalctlFinalizeLog(filepath.Join(s.hostRoot, "var", "log", "journal"), systemd.ExecRunner{})
	if err != nil {
		return err
	}

	authFile, err := installPullSecret(log, s)
	if err != nil {
		return err
	}
	images, err := image.New(image.Options{
		RegistriesConfPath: s.registriesConf, RegistriesDDir: s.registriesD, PolicyPath: s.policy,
		AuthFilePath: authFile, OS: node.Status.NodeInfo.OperatingSystem, Arch: node.Status.NodeInfo.Architecture,
		Logger: log,
	})
	if err != nil {
		return fmt.Errorf("configuring image verification: %w", err)
	}
	writer, err := nodestatus.New(kube, s.nodeName, clk, log)
	if err != nil {
		return err
	}
	slots, err := coord.New(kube, s.namespace, clk, log, coord.WithLeaseDuration(s.slotLease))
	if err != nil {
		return err
	}
	drainer, err := drain.New(kube, s.nodeName, drain.Options{Timeout: s.drainTimeout, PodSelector: agentPodsExcluded}, log,
		drain.WithPolicy(poolPolicy(slots, s.nodeName)))
	if err != nil {
		return err
	}
	machine, err := daemon.New(daemon.DefaultConfig(rand.Float64))
	if err != nil {
		return err
	}
	m := metrics.New(s.nodeName)
	health, err := metrics.NewHealth(2*time.Minute, clk.Now)
	if err != nil {
		return err
	}
	if err := serve(ctx, log, s, m, health); err != nil {
		return err
	}

	hfs, err := hostfs.New(hostfs.Options{HostRoot: s.hostRoot, Log: log,
		Limits: hostfs.Limits{MaxFiles: s.hostfsMaxFiles, MaxBytes: s.hostfsMaxBytes}})
	if err != nil {
		return err
	}
	a, err := agent.New(agent.Deps{
		Kube: kube, Machine: machine, Status: writer, Slots: slots, Drainer: drainer, Images: images,
		Host: host, Disk: agent.StatfsDisk{Path: s.sysroot}, HostFS: hfs, Updaters: others, Finalize: finalizeLog, Inhibitors: inhibitors, Metrics: m, Health: health,
		Notifier: systemd.Notifier{}, Clock: clk, Log: base,
	}, agent.Config{NodeName: s.nodeName, RegisterDriver: s.registerDriver})
	if err != nil {
		return err
	}
	if err := (systemd.Notifier{}).Ready(); err != nil {
		log.Warn("sd_notify READY", zap.Error(err))
	}
	return a.Run(ctx)
}

// agentPodsExcluded keeps the drain off the agent's own pods (the DaemonSet's label): the reboot
// ends them and the DaemonSet brings them back. A pool's podSelector narrows it further.
const agentPodsExcluded = "app!=layerd-agent"

// poolPolicy is the drain's policy source: the node's pool (its label, read now) and that
// pool's fields in layerd-config.
func poolPolicy(slots *coord.Slots, node string) drain.PolicySource {
	return func(ctx context.Context) (drain.Policy, error) {
		pool, p, err := slots.NodePolicy(ctx, node)
		return drain.Policy{Pool: pool, Raw: p.Raw}, err
	}
}

// runAuthPath is where rpm-ostree looks for registry credentials first (the host's /run).
const runAuthPath = "/run/ostree/auth.json"

// installPullSecret makes --pull-secret available to rpm-ostree and returns the auth file the
// agent verifies with ("" without a pull secret: the library's default search).
func installPullSecret(log *zap.Logger, s agentSettings) (string, error) {
	if s.pullSecret == "" {
		return "", nil
	}
	ps := agent.PullSecret{Secret: s.pullSecret, HostAuth: filepath.Join(s.hostRoot, "etc", "ostree", "auth.json"), RunAuth: runAuthPath}
	path, err := ps.Install()
	if errors.Is(err, agent.ErrForeignAuthFile) {
		log.Warn("leaving a runtime auth file layerd did not write; rpm-ostree uses it", zap.String("path", runAuthPath))
		return s.pullSecret, nil
	}
	if err != nil {
		return "", fmt.Errorf("installing the pull secret: %w", err)
	}
	return path, nil
}

// serve starts /metrics and /healthz, /readyz (one server when both addresses are the same).
func serve(ctx context.Context, log *zap.Logger, s agentSettings, m *metrics.Metrics, h *metrics.Health) error {
	muxes := map[string]*http.ServeMux{}
	mux := func(addr string) *http.ServeMux {
		if muxes[addr] == nil {
			muxes[addr] = http.NewServeMux()
		}
		return muxes[addr]
	}
	if s.metricsAddr != "" {
		mux(s.metricsAddr).Handle("/metrics", m.Handler())
	}
	if s.healthAddr != "" {
		h.Register(mux(s.healthAddr))
	}
	for addr, mx := range muxes {
		bound, done, err := metrics.Serve(ctx, addr, mx)
		if err != nil {
			return fmt.Errorf("serving on %s: %w", addr, err)
		}
		log.Info("serving metrics and health", zap.String("addr", bound))
		go func() {
			if err := <-done; err != nil {
				log.Error("metrics server ended", zap.String("addr", bound), zap.Error(err))
			}
		}()
	}
	return nil
}
