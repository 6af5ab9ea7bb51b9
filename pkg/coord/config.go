package coord

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// ConfigMapName is the pool policy ConfigMap in the agent namespace.
const ConfigMapName = "layerd-config"

// ConfigKeyPools is the ConfigMap data key holding the pools document:
//
//	default:
//	  maxUnavailable: 1
//	workers:
//	  maxUnavailable: "25%"
//
// A pool that is not listed (or a missing ConfigMap or key) gets the defaults.
const ConfigKeyPools = "pools.yaml"

// DefaultMaxUnavailable is the number of reboot slots of a pool without a policy.
const DefaultMaxUnavailable = 1

// PolicyKeys are the pool policy fields of DESIGN §4. Other keys are reported by
// Config.Unknown (and logged by Slots) so a misspelt knob is visible; they are not rejected, as
// packages owning newer fields read them from PoolPolicy.Raw.
var PolicyKeys = []string{"maxUnavailable", "maxUnavailablePerZone", "maxParallelStaging", "windows",
	"paused", "drainTimeout", "drain", "settleTime", "healthChecks", "etcPolicy", "varPolicy", "rebootPolicy",
	"allowedUpdaters"} // allowedUpdaters: pkg/updaters.PolicyKey

// UnsupportedKeys are policy fields of DESIGN §4 this version accepts but does not enforce yet;
// Config.Unsupported reports them (and Slots logs them) so an admin is not misled.
var UnsupportedKeys = []string{"maxUnavailablePerZone", "maxParallelStaging", "windows", "healthChecks"}

// RebootPolicy is a pool's rebootPolicy.
type RebootPolicy string

const (
	// RebootAutomatic: a staged node takes a reboot slot as soon as one is free (the default).
	RebootAutomatic RebootPolicy = "Automatic"
	// RebootManual: a staged node takes a slot only once the Node carries
	// layerd.dev/approve-reboot=<desired-digest>.
	RebootManual RebootPolicy = "Manual"
)

// Config is the parsed pools document.
type Config struct {
	pools       map[string]PoolPolicy
	unknown     []string
	unsupported []string
}

// Unknown returns "pool.field" for every field that is not one of PolicyKeys, sorted.
func (c Config) Unknown() []string { return append([]string(nil), c.unknown...) }

// Unsupported returns "pool.field" for every field of UnsupportedKeys that is set, sorted.
func (c Config) Unsupported() []string { return append([]string(nil), c.unsupported...) }

// PoolPolicy is the part of one pool's policy coord enforces.
type PoolPolicy struct {
	// MaxUnavailable is the number (int) or share ("25%") of the pool's Nodes that may hold a
	// reboot slot at once.
	MaxUnavailable intstr.IntOrString
	// Paused: no node of the pool takes a reboot slot (staging still happens, so the pool
	// reboots promptly once resumed).
	Paused bool
	// RebootPolicy says whether a staged node needs the admin's approval to take a slot.
	RebootPolicy RebootPolicy
	// SettleTime, when set, is how long a rebooted node must be Ready before it is Done and
	// frees its slot (nil: the agent's default, 10s).
	SettleTime *time.Duration
	// Err is set when a field above has a bad value: the pool's nodes must not take a slot on a
	// policy that was not understood (the other pools are unaffected). It names the pool and field.
	Err error
	// Raw holds every field of the pool's entry as JSON, for the packages owning the others.
	Raw map[string]json.RawMessage
}

// ParseConfig reads the pools document from cm. A nil ConfigMap or a missing key is the empty
// Config (every pool gets the defaults).
func ParseConfig(cm *corev1.ConfigMap) (Config, error) {
	c := Config{pools: map[string]PoolPolicy{}}
	if cm == nil || strings.TrimSpace(cm.Data[ConfigKeyPools]) == "" {
		return c, nil
	}
	var doc map[string]map[string]json.RawMessage
	if err := yaml.Unmarshal([]byte(cm.Data[ConfigKeyPools]), &doc); err != nil {
		return Config{}, fmt.Errorf("parsing %s/%s: %w", cm.Name, ConfigKeyPools, err)
	}
	for pool, fields := range doc {
		if err := ValidatePoolName(pool); err != nil {
			return Config{}, fmt.Errorf("parsing %s/%s: %w", cm.Name, ConfigKeyPools, err)
		}
		p := PoolPolicy{MaxUnavailable: intstr.FromInt32(DefaultMaxUnavailable), RebootPolicy: RebootAutomatic, Raw: fields}
		for k := range fields {
			if !slices.Contains(PolicyKeys, k) {
				c.unknown = append(c.unknown, pool+"."+k)
			}
			if slices.Contains(UnsupportedKeys, k) {
				c.unsupported = append(c.unsupported, pool+"."+k)
			}
		}
		p.Err = p.parseFields(fields)
		if p.Err != nil {
			p.Err = fmt.Errorf("%s/%s: pool %s: %w", cm.Name, ConfigKeyPools, pool, p.Err)
		}
		c.pools[pool] = p
	}
	sort.Strings(c.unknown)
	sort.Strings(c.unsupported)
	return c, nil
}

// parseFields reads the fields coord enforces; a null value keeps the default. It stops at the
// first bad value: the pool's policy is then unusable (PoolPolicy.Err), the other pools are not.
func (p *PoolPolicy) parseFields(fields map[string]json.RawMessage) error {
	set := func(key string) (json.RawMessage, bool) {
		raw, ok := fields[key]
		return raw, ok && string(raw) != "null"
	}
	if raw, ok := set("paused"); ok {
		if err := json.Unmarshal(raw, &p.Paused); err != nil {
			return fmt.Errorf("paused %s: want true or false", raw)
		}
	}
	if raw, ok := set("settleTime"); ok {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("settleTime %s: want a duration such as \"30s\" or \"5m\"", raw)
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("settleTime %s: want a duration such as \"30s\" or \"5m\"", raw)
		}
		p.SettleTime = &d
	}
	if raw, ok := set("rebootPolicy"); ok {
		var v string
		if err := json.Unmarshal(raw, &v); err != nil || (v != string(RebootAutomatic) && v != string(RebootManual)) {
			return fmt.Errorf("rebootPolicy %s: want %s or %s", raw, RebootAutomatic, RebootManual)
		}
		p.RebootPolicy = RebootPolicy(v)
	}
	if raw, ok := set("maxUnavailable"); ok {
		v, err := parseMaxUnavailable(raw)
		if err != nil {
			return fmt.Errorf("maxUnavailable: %w", err)
		}
		p.MaxUnavailable = v
	}
	return nil
}

// Err joins the errors of every pool whose policy is not understood (nil when none).
func (c Config) Err() error {
	names := make([]string, 0, len(c.pools))
	for name := range c.pools {
		names = append(names, name)
	}
	sort.Strings(names)
	var errs []error
	for _, name := range names {
		if err := c.pools[name].Err; err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Pool returns the policy of pool, the defaults when the document does not list it.
func (c Config) Pool(pool string) PoolPolicy {
	if p, ok := c.pools[pool]; ok {
		return p
	}
	return PoolPolicy{MaxUnavailable: intstr.FromInt32(DefaultMaxUnavailable), RebootPolicy: RebootAutomatic}
}

// Slots returns the number of reboot slots for a pool of poolSize Nodes: the integer, or the
// percentage of poolSize rounded down but at least 1.
func (p PoolPolicy) Slots(poolSize int) (int, error) {
	v := p.MaxUnavailable
	if v.Type == intstr.Int {
		if v.IntVal < 1 {
			return 0, fmt.Errorf("maxUnavailable %d is below 1", v.IntVal)
		}
		return int(v.IntVal), nil
	}
	pct, err := percent(v.StrVal)
	if err != nil {
		return 0, err
	}
	n := int(math.Floor(float64(poolSize) * float64(pct) / 100))
	return max(n, 1), nil
}

// IsPercent reports whether MaxUnavailable needs the pool's size.
func (p PoolPolicy) IsPercent() bool { return p.MaxUnavailable.Type == intstr.String }

func parseMaxUnavailable(raw json.RawMessage) (intstr.IntOrString, error) {
	var v intstr.IntOrString
	if err := json.Unmarshal(raw, &v); err != nil {
		return v, fmt.Errorf("want an integer or a percentage: %w", err)
	}
	if v.Type == intstr.String {
		if n, err := strconv.Atoi(v.StrVal); err == nil { // "2" means 2
			v = intstr.FromInt(n)
		}
	}
	if _, err := (PoolPolicy{MaxUnavailable: v}).Slots(1); err != nil {
		return v, err
	}
	return v, nil
}

func percent(s string) (int, error) {
	num, ok := strings.CutSuffix(s, "%")
	if !ok {
		return 0, fmt.Errorf("maxUnavailable %q is neither an integer nor a percentage", s)
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || n > 100 {
		return 0, fmt.Errorf("maxUnavailable %q: want 1%%..100%%", s)
	}
	return n, nil
}

// ValidatePoolName checks that pool can name a Lease (layerd-slot-<pool>-<i>) and label it:
// a DNS-1123 label (lowercase alphanumerics and '-', at most 63 characters).
func ValidatePoolName(pool string) error {
	if errs := validation.IsDNS1123Label(pool); len(errs) > 0 {
		return fmt.Errorf("pool name %q: %s", pool, strings.Join(errs, "; "))
	}
	return nil
}
