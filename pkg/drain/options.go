package drain

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
)

// DefaultTimeout bounds one Drain when Options.Timeout is zero.
const DefaultTimeout = 10 * time.Minute

// DefaultEvictionRetryInterval is the pause before retrying an eviction the API server refused
// with 429 (a PodDisruptionBudget allows no disruption now); kubectl drain uses the same.
const DefaultEvictionRetryInterval = 5 * time.Second

// Options are one pool's drain settings. The zero value is the documented default for every
// field; the three whose default is not Go's zero value are pointers (nil = default).
type Options struct {
	// Timeout bounds one Drain call, eviction retries and waiting for pods to terminate
	// included. Zero means DefaultTimeout (10m); there is no unbounded drain, because the node
	// holds a reboot slot while it drains.
	Timeout time.Duration
	// IgnoreDaemonSets leaves DaemonSet-managed pods running (the reboot ends them). Default
	// true; false refuses to drain a node that runs any DaemonSet pod, as kubectl drain does.
	IgnoreDaemonSets *bool
	// DeleteEmptyDirData evicts pods with emptyDir volumes, losing that data. Default true;
	// false refuses to drain a node that runs such a pod.
	DeleteEmptyDirData *bool
	// GracePeriodSeconds overrides each evicted pod's terminationGracePeriodSeconds. Default nil
	// (or any negative value): every pod gets its own grace period. 0 means "stop at once".
	GracePeriodSeconds *int64
	// Force also evicts pods that no controller manages. Default false: such pods would not come
	// back anywhere, so they are never evicted or deleted; a node running one is refused with a
	// *RefusedError naming it. Even with Force, pods are evicted, never deleted: PDBs still hold.
	Force bool
	// PodSelector restricts the drain to pods matching this label selector. Default: all pods.
	PodSelector string
	// SkipWaitForDeleteTimeout stops waiting for pods whose deletion began longer ago than this
	// (their node is usually unhealthy). Default 0: always wait, up to Timeout.
	SkipWaitForDeleteTimeout time.Duration
	// EvictionRetryInterval is the pause between eviction attempts a PDB refused. Default 5s.
	EvictionRetryInterval time.Duration
	// Clock measures elapsed time for logs and errors. Default: the real clock. Deadlines are
	// contexts, because k8s.io/kubectl/pkg/drain waits on them.
	Clock clock.PassiveClock
}

// settings are Options with the defaults applied and validated.
type settings struct {
	timeout            time.Duration
	ignoreDaemonSets   bool
	deleteEmptyDirData bool
	gracePeriodSeconds int // negative: each pod's own
	force              bool
	podSelector        string
	skipWaitSeconds    int
	retryInterval      time.Duration
	clock              clock.PassiveClock
}

func (o Options) resolve() (settings, error) {
	s := settings{
		timeout:            o.Timeout,
		ignoreDaemonSets:   true,
		deleteEmptyDirData: true,
		gracePeriodSeconds: -1,
		force:              o.Force,
		podSelector:        o.PodSelector,
		retryInterval:      o.EvictionRetryInterval,
		clock:              o.Clock,
	}
	switch {
	case o.Timeout < 0:
		return s, fmt.Errorf("drain timeout %v is negative", o.Timeout)
	case o.SkipWaitForDeleteTimeout < 0:
		return s, fmt.Errorf("skipWaitForDeleteTimeout %v is negative", o.SkipWaitForDeleteTimeout)
	case o.EvictionRetryInterval < 0:
		return s, fmt.Errorf("eviction retry interval %v is negative", o.EvictionRetryInterval)
	}
	if _, err := labels.Parse(o.PodSelector); err != nil {
		return s, fmt.Errorf("pod selector %q: %w", o.PodSelector, err)
	}
	if s.timeout == 0 {
		s.timeout = DefaultTimeout
	}
	if o.IgnoreDaemonSets != nil {
		s.ignoreDaemonSets = *o.IgnoreDaemonSets
	}
	if o.DeleteEmptyDirData != nil {
		s.deleteEmptyDirData = *o.DeleteEmptyDirData
	}
	if g := o.GracePeriodSeconds; g != nil && *g >= 0 {
		s.gracePeriodSeconds = int(*g)
	}
	if o.SkipWaitForDeleteTimeout > 0 {
		// kubectl counts whole seconds; round up so a sub-second value does not disable it.
		s.skipWaitSeconds = int((o.SkipWaitForDeleteTimeout + time.Second - 1) / time.Second)
	}
	if s.retryInterval == 0 {
		s.retryInterval = DefaultEvictionRetryInterval
	}
	if s.clock == nil {
		s.clock = clock.RealClock{}
	}
	return s, nil
}

// Policy keys read by OptionsFromPolicy: DESIGN §4's drainTimeout, and a drain object for the rest.
const (
	PolicyKeyTimeout = "drainTimeout"
	PolicyKeyDrain   = "drain"
)

// policyDrain is the pool policy's drain object. Every field is a pointer: nil is "not set
// here", so ApplyPolicy keeps the value it lays the policy over.
type policyDrain struct {
	IgnoreDaemonSets         *bool     `json:"ignoreDaemonSets"`
	DeleteEmptyDirData       *bool     `json:"deleteEmptyDirData"`
	GracePeriodSeconds       *int64    `json:"gracePeriodSeconds"`
	Force                    *bool     `json:"force"`
	PodSelector              *string   `json:"podSelector"`
	SkipWaitForDeleteTimeout *Duration `json:"skipWaitForDeleteTimeout"`
}

// Duration is a time.Duration written as a Go duration string ("90s", "10m").
type Duration time.Duration

// UnmarshalJSON accepts a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration such as \"10m\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// OptionsFromPolicy reads a pool's drain settings from its policy fields (coord.PoolPolicy.Raw)
// over the defaults: Options{}.ApplyPolicy(raw).
func OptionsFromPolicy(raw map[string]json.RawMessage) (Options, error) {
	o, err := Options{}.ApplyPolicy(raw)
	if err != nil {
		return Options{}, fmt.Errorf("pool policy: %w", err)
	}
	return o, nil
}

// ApplyPolicy returns o with a pool's drain settings (coord.PoolPolicy.Raw) laid over it:
//
//	drainTimeout: 15m
//	drain:
//	  ignoreDaemonSets: true
//	  deleteEmptyDirData: true
//	  gracePeriodSeconds: -1
//	  force: false
//	  podSelector: "app!=batch"
//	  skipWaitForDeleteTimeout: 5m
//
// A field the policy sets replaces o's, except podSelector, which narrows o.PodSelector (both
// must match: the selectors are joined with a comma), so a selector the caller always applies,
// such as the agent's app!=layerd-agent, cannot be lifted by a pool. Fields the policy leaves
// out keep o's values. drainTimeout must be positive; unknown fields inside drain are errors;
// the result is validated as New would.
func (o Options) ApplyPolicy(raw map[string]json.RawMessage) (Options, error) {
	if v, ok := raw[PolicyKeyTimeout]; ok {
		var d Duration
		if err := json.Unmarshal(v, &d); err != nil {
			return Options{}, fmt.Errorf("%s: %w", PolicyKeyTimeout, err)
		}
		if d <= 0 {
			return Options{}, fmt.Errorf("%s %s: want a positive duration", PolicyKeyTimeout, time.Duration(d))
		}
		o.Timeout = time.Duration(d)
	}
	if v, ok := raw[PolicyKeyDrain]; ok {
		var p policyDrain
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return Options{}, fmt.Errorf("%s: %w", PolicyKeyDrain, err)
		}
		if p.IgnoreDaemonSets != nil {
			o.IgnoreDaemonSets = p.IgnoreDaemonSets
		}
		if p.DeleteEmptyDirData != nil {
			o.DeleteEmptyDirData = p.DeleteEmptyDirData
		}
		if p.GracePeriodSeconds != nil {
			o.GracePeriodSeconds = p.GracePeriodSeconds
		}
		if p.Force != nil {
			o.Force = *p.Force
		}
		if p.PodSelector != nil {
			o.PodSelector = joinSelectors(o.PodSelector, *p.PodSelector)
		}
		if p.SkipWaitForDeleteTimeout != nil {
			o.SkipWaitForDeleteTimeout = time.Duration(*p.SkipWaitForDeleteTimeout)
		}
	}
	if _, err := o.resolve(); err != nil {
		return Options{}, err
	}
	return o, nil
}

// joinSelectors ANDs two label selectors (either may be empty).
func joinSelectors(a, b string) string {
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	return a + "," + b
}
