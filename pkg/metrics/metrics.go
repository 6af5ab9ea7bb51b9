// Package metrics owns layerd's Prometheus metrics and its /healthz and /readyz endpoints.
//
// A Metrics value owns its own registry (never the global default registerer); its methods are
// named for what happened on the node (SetPhase, Error, Rebooted, …) so that callers never touch
// a collector. docs/metrics.md lists every metric; metrics_test.go keeps it in sync.
package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// Metric names, one place in code; docs/metrics.md documents each.
const (
	NamePhase          = "layerd_phase"
	NameState          = "layerd_state"
	NameUpdateDuration = "layerd_update_duration_seconds"
	NameErrors         = "layerd_errors_total"
	NameReboots        = "layerd_reboots_total"
	NameStagingBytes   = "layerd_staging_bytes_total"
	NameInfo           = "layerd_info"
	NameLastTransition = "layerd_last_transition_timestamp_seconds"
	NameEtcDriftFiles  = "layerd_etc_drift_files"
	labelPhase         = "phase"
	labelState         = "state"
	labelReason        = "reason"
	labelBootedDigest  = "booted_digest"
	labelStagedDigest  = "staged_digest"
	labelNode          = "node"
)

// durationBuckets span a one-second Resolving to a WaitingForSlot of several hours.
var durationBuckets = []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400}

// Metrics is the agent's set of metrics for one node. Its methods are safe for concurrent use.
type Metrics struct {
	reg *prometheus.Registry

	phase          *prometheus.GaugeVec
	state          *prometheus.GaugeVec
	duration       *prometheus.HistogramVec
	errors         *prometheus.CounterVec
	reboots        prometheus.Counter
	stagingBytes   prometheus.Counter
	info           *prometheus.GaugeVec
	lastTransition prometheus.Gauge
	etcDrift       prometheus.Gauge

	mu      sync.Mutex
	phases  map[nodestatus.Phase]bool // every phase with a series, for the one-hot
	states  map[nodestatus.State]bool
	current nodestatus.Phase
	infoSet bool
	booted  string
	staged  string
}

// New returns the metrics of node, registered in a registry of their own together with the
// standard go_* and process_* collectors. Every known phase, state and reason code has a series
// from the start (0), so dashboards and rate() see them before they first happen. node is a
// constant label of layerd_info only: the Prometheus scrape config usually adds its own node
// label to every series, and layerd_info is the one to join on.
func New(node string) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		phase: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NamePhase,
			Help: "1 for the update phase the agent is in, 0 for the others; all 0 when no update is under way.",
		}, []string{labelPhase}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: NameState,
			Help: "1 for the node's layerd state (Done, Working, Degraded), 0 for the others.",
		}, []string{labelState}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    NameUpdateDuration,
			Help:    "Time spent in each update phase, observed when the phase is left.",
			Buckets: durationBuckets,
		}, []string{labelPhase}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: NameErrors,
			Help: "Failures and warnings reported, by reason code (docs/reasons.md).",
		}, []string{labelReason}),
		reboots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameReboots,
			Help: "Reboots the agent started into a staged deployment.",
		}),
		stagingBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: NameStagingBytes,
			Help: "Bytes downloaded while staging OS images.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name:        NameInfo,
			Help:        "Always 1; labels carry the booted and staged image digests (\"\" when none).",
			ConstLabels: prometheus.Labels{labelNode: node},
		}, []string{labelBootedDigest, labelStagedDigest}),
		lastTransition: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameLastTransition,
			Help: "Unix time of the last phase transition.",
		}),
		etcDrift: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: NameEtcDriftFiles,
			Help: "Paths in /etc that differ from the booted image's defaults, measured at start and after each update.",
		}),
		phases: map[nodestatus.Phase]bool{},
		states: map[nodestatus.State]bool{},
	}
	m.reg.MustRegister(m.phase, m.state, m.duration, m.errors, m.reboots, m.stagingBytes, m.info,
		m.lastTransition, m.etcDrift,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, p := range nodestatus.Phases() {
		m.phases[p] = true
		m.phase.WithLabelValues(string(p)).Set(0)
	}
	for _, s := range []nodestatus.State{nodestatus.StateDone, nodestatus.StateWorking, nodestatus.StateDegraded} {
		m.states[s] = true
		m.state.WithLabelValues(string(s)).Set(0)
	}
	for _, r := range reason.All() {
		m.errors.WithLabelValues(string(r.Code)).Add(0)
	}
	return m
}

// Handler serves the registry in the Prometheus exposition formats; mount it at /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Registry is the registry the metrics live in, for callers that add collectors of their own.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// SetPhase records that the agent is now in phase p since now (the transition time recorded on
// the Node, so a restarted agent reports the original time). An empty p means no update is under
// way: every phase series drops to 0. Setting the phase it is already in changes nothing.
// Phases outside nodestatus.Phases() get a series of their own.
func (m *Metrics) SetPhase(p nodestatus.Phase, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if p == m.current {
		return
	}
	m.current = p
	if p != "" {
		m.phases[p] = true
	}
	for known := range m.phases {
		m.phase.WithLabelValues(string(known)).Set(oneHot(known == p))
	}
	m.lastTransition.Set(float64(now.UnixNano()) / 1e9)
}

// SetState records the node's layerd state (Done, Working or Degraded).
func (m *Metrics) SetState(s nodestatus.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.states[s] = true
	for known := range m.states {
		m.state.WithLabelValues(string(known)).Set(oneHot(known == s))
	}
}

// ObservePhaseDuration records that the agent spent d in phase p. Call it when p is left.
func (m *Metrics) ObservePhaseDuration(p nodestatus.Phase, d time.Duration) {
	m.duration.WithLabelValues(string(p)).Observe(d.Seconds())
}

// Error counts one reported failure or warning with reason code c.
func (m *Metrics) Error(c reason.Code) {
	m.errors.WithLabelValues(string(c)).Inc()
}

// Rebooted counts one reboot the agent started.
func (m *Metrics) Rebooted() { m.reboots.Inc() }

// AddStagingBytes counts n more bytes downloaded while staging.
func (m *Metrics) AddStagingBytes(n uint64) { m.stagingBytes.Add(float64(n)) }

// SetInfo records the booted and staged image digests ("" when there is none). The series of
// the previous pair is deleted, so exactly one layerd_info series exists.
func (m *Metrics) SetInfo(booted, staged string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.infoSet && (booted != m.booted || staged != m.staged) {
		m.info.DeleteLabelValues(m.booted, m.staged)
	}
	m.infoSet, m.booted, m.staged = true, booted, staged
	m.info.WithLabelValues(booted, staged).Set(1)
}

// SetEtcDriftFiles records how many /etc files differ from the booted image's defaults.
func (m *Metrics) SetEtcDriftFiles(n int) { m.etcDrift.Set(float64(n)) }

func oneHot(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
