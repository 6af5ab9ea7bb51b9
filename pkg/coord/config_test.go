package coord_test

import (
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/coord"
)

func configMap(doc string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: coord.ConfigMapName, Namespace: "layerd"},
		Data: map[string]string{coord.ConfigKeyPools: doc}}
}

func TestParseConfig(t *testing.T) {
	t.Run("reads_integers_percentages_and_numeric_strings", func(t *testing.T) {
		cfg, err := coord.ParseConfig(configMap("default:\n  maxUnavailable: 2\ngpu:\n  maxUnavailable: 25%\nedge:\n  maxUnavailable: \"3\"\n"))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			pool       string
			size, want int
		}{{"default", 0, 2}, {"gpu", 10, 2}, {"gpu", 3, 1}, {"gpu", 100, 25}, {"edge", 0, 3}, {"unlisted", 50, 1}} {
			got, err := cfg.Pool(c.pool).Slots(c.size)
			if err != nil || got != c.want {
				t.Errorf("pool %s of %d nodes: %d slots (%v), want %d", c.pool, c.size, got, err, c.want)
			}
		}
	})
	t.Run("a_missing_configmap_or_key_means_one_slot_per_pool", func(t *testing.T) {
		for _, cm := range []*corev1.ConfigMap{nil, {Data: map[string]string{"other": "x"}}} {
			cfg, err := coord.ParseConfig(cm)
			if err != nil {
				t.Fatal(err)
			}
			if n, err := cfg.Pool("default").Slots(7); n != 1 || err != nil {
				t.Fatalf("slots = %d, %v", n, err)
			}
		}
	})
	t.Run("rejects_values_that_are_not_a_positive_count_or_share", func(t *testing.T) {
		for _, v := range []string{"0", "-1", "0%", "150%", "abc", "1.5", "[1]"} {
			cfg, err := coord.ParseConfig(configMap("default:\n  maxUnavailable: " + v + "\nother:\n  maxUnavailable: 2\n"))
			if err != nil {
				t.Fatalf("maxUnavailable %s: a bad value fails the whole document: %v", v, err)
			}
			if p := cfg.Pool("default"); p.Err == nil || !strings.Contains(p.Err.Error(), "pool default") {
				t.Errorf("maxUnavailable %s accepted (err %v)", v, p.Err)
			}
			if p := cfg.Pool("other"); p.Err != nil || p.MaxUnavailable.IntValue() != 2 {
				t.Errorf("another pool's bad value broke pool other: %+v", p)
			}
		}
	})
	t.Run("rejects_pool_names_that_cannot_name_a_lease", func(t *testing.T) {
		_, err := coord.ParseConfig(configMap("GPU_pool:\n  maxUnavailable: 1\n"))
		if err == nil || !strings.Contains(err.Error(), "GPU_pool") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("rejects_a_document_that_is_not_a_map_of_pools", func(t *testing.T) {
		if _, err := coord.ParseConfig(configMap("- default\n")); err == nil {
			t.Fatal("list accepted")
		}
	})
	t.Run("reports_unknown_fields_and_keeps_every_field_raw", func(t *testing.T) {
		cfg, err := coord.ParseConfig(configMap("default:\n  maxUnavaliable: 3\n  drainTimeout: 10m\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Unknown(); !reflect.DeepEqual(got, []string{"default.maxUnavaliable"}) {
			t.Fatalf("Unknown = %v", got)
		}
		if n, _ := cfg.Pool("default").Slots(9); n != 1 {
			t.Fatalf("a misspelt maxUnavailable changed the slots to %d", n)
		}
		if string(cfg.Pool("default").Raw["drainTimeout"]) != `"10m"` {
			t.Fatalf("raw = %s", cfg.Pool("default").Raw["drainTimeout"])
		}
	})
	t.Run("reads_paused_and_reboot_policy_with_their_defaults", func(t *testing.T) {
		cfg, err := coord.ParseConfig(configMap("default:\n  paused: true\ngpu:\n  rebootPolicy: Manual\n"))
		if err != nil {
			t.Fatal(err)
		}
		for pool, want := range map[string]struct {
			paused bool
			reboot coord.RebootPolicy
		}{"default": {true, coord.RebootAutomatic}, "gpu": {false, coord.RebootManual}, "unlisted": {false, coord.RebootAutomatic}} {
			if p := cfg.Pool(pool); p.Paused != want.paused || p.RebootPolicy != want.reboot {
				t.Errorf("pool %s: paused %v rebootPolicy %q, want %v %q", pool, p.Paused, p.RebootPolicy, want.paused, want.reboot)
			}
		}
	})
	t.Run("rejects_a_paused_that_is_not_a_boolean_and_an_unknown_reboot_policy", func(t *testing.T) {
		for _, doc := range []string{"default:\n  paused: \"yes please\"\n", "default:\n  paused: 1\n",
			"default:\n  rebootPolicy: manual\n", "default:\n  rebootPolicy: [Manual]\n"} {
			if cfg, err := coord.ParseConfig(configMap(doc)); err != nil || cfg.Pool("default").Err == nil {
				t.Errorf("%q: err %v, pool err %v; want the pool's policy refused", doc, err, cfg.Pool("default").Err)
			}
		}
		cfg, err := coord.ParseConfig(configMap("default:\n  rebootPolicy:\n  paused:\n  settleTime:\n"))
		if err != nil || cfg.Pool("default").Err != nil || cfg.Pool("default").RebootPolicy != coord.RebootAutomatic {
			t.Errorf("null values: %v %+v; want the defaults", err, cfg.Pool("default"))
		}
	})
	t.Run("reports_the_fields_it_does_not_enforce_yet", func(t *testing.T) {
		cfg, err := coord.ParseConfig(configMap("default:\n  maxParallelStaging: 2\n  windows: []\n  maxUnavailable: 1\n"))
		if err != nil {
			t.Fatal(err)
		}
		if got := cfg.Unsupported(); !reflect.DeepEqual(got, []string{"default.maxParallelStaging", "default.windows"}) {
			t.Fatalf("Unsupported = %v", got)
		}
	})
	t.Run("reads_settle_time_as_a_duration", func(t *testing.T) {
		cfg, err := coord.ParseConfig(configMap("default:\n  settleTime: 90s\n"))
		if err != nil {
			t.Fatal(err)
		}
		if st := cfg.Pool("default").SettleTime; st == nil || *st != 90*time.Second {
			t.Fatalf("settleTime = %v", st)
		}
		if st := cfg.Pool("other").SettleTime; st != nil {
			t.Fatalf("unlisted pool settleTime = %v, want unset", *st)
		}
		for _, v := range []string{"5", "-1s", "soon", "[1m]"} {
			if cfg, err := coord.ParseConfig(configMap("default:\n  settleTime: " + v + "\n")); err != nil || cfg.Pool("default").Err == nil {
				t.Errorf("settleTime %s accepted (%v)", v, err)
			}
		}
	})
}
