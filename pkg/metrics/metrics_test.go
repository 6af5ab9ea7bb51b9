package metrics_test

import (
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"layerd.dev/layerd/pkg/metrics"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

const docPath = "../../docs/metrics.md"

func serveMetrics(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(metrics.PathMetrics, m.Handler())
	return serve(t, mux)
}

func TestMetrics(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

	t.Run("every_metric_is_exposed_from_the_start_with_known_values_at_zero", func(t *testing.T) {
		f := scrape(t, serveMetrics(t, metrics.New("node-a")))
		for _, p := range nodestatus.Phases() {
			if v := f.value(t, metrics.NamePhase, map[string]string{"phase": string(p)}); v != 0 {
				t.Errorf("phase %s = %v, want 0", p, v)
			}
		}
		for _, s := range []string{"Done", "Working", "Degraded"} {
			if v := f.value(t, metrics.NameState, map[string]string{"state": s}); v != 0 {
				t.Errorf("state %s = %v, want 0", s, v)
			}
		}
		for _, r := range reason.All() {
			if v := f.value(t, metrics.NameErrors, map[string]string{"reason": string(r.Code)}); v != 0 {
				t.Errorf("errors{%s} = %v, want 0", r.Code, v)
			}
		}
		for _, n := range []string{metrics.NameReboots, metrics.NameStagingBytes, metrics.NameLastTransition,
			metrics.NameEtcDriftFiles} {
			if v := f.value(t, n, nil); v != 0 {
				t.Errorf("%s = %v, want 0", n, v)
			}
		}
		if _, ok := f["go_goroutines"]; !ok {
			t.Error("go collector missing")
		}
	})

	t.Run("set_phase_is_one_hot_and_records_the_transition_time", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetPhase(nodestatus.PhaseStaging, t0)
		m.SetPhase(nodestatus.PhaseDraining, t0.Add(90*time.Second+500*time.Millisecond))
		f := scrape(t, base)
		if got := f.labelValues(t, metrics.NamePhase, "phase", 1); !slices.Equal(got, []string{"Draining"}) {
			t.Errorf("phases at 1: %v, want [Draining]", got)
		}
		if n := len(f.labelValues(t, metrics.NamePhase, "phase", 0)); n != len(nodestatus.Phases())-1 {
			t.Errorf("%d phases at 0, want %d", n, len(nodestatus.Phases())-1)
		}
		want := float64(t0.Unix()) + 90.5
		if v := f.value(t, metrics.NameLastTransition, nil); v != want {
			t.Errorf("last transition %v, want %v", v, want)
		}
	})

	t.Run("setting_the_current_phase_again_keeps_the_transition_time", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetPhase(nodestatus.PhaseStaging, t0)
		m.SetPhase(nodestatus.PhaseStaging, t0.Add(time.Hour))
		if v := scrape(t, base).value(t, metrics.NameLastTransition, nil); v != float64(t0.Unix()) {
			t.Errorf("last transition %v, want %v", v, t0.Unix())
		}
	})

	t.Run("an_empty_phase_drops_every_phase_to_zero", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetPhase(nodestatus.PhaseConfirming, t0)
		m.SetPhase("", t0.Add(time.Minute))
		f := scrape(t, base)
		if got := f.labelValues(t, metrics.NamePhase, "phase", 1); len(got) != 0 {
			t.Errorf("phases at 1 after the update ended: %v", got)
		}
		if v := f.value(t, metrics.NameLastTransition, nil); v != float64(t0.Add(time.Minute).Unix()) {
			t.Errorf("last transition %v", v)
		}
	})

	t.Run("a_phase_outside_the_protocol_gets_its_own_series", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetPhase("Degraded", t0)
		m.SetPhase(nodestatus.PhaseResolving, t0.Add(time.Second))
		f := scrape(t, base)
		if v := f.value(t, metrics.NamePhase, map[string]string{"phase": "Degraded"}); v != 0 {
			t.Errorf("Degraded after leaving it = %v", v)
		}
		if got := f.labelValues(t, metrics.NamePhase, "phase", 1); !slices.Equal(got, []string{"Resolving"}) {
			t.Errorf("phases at 1: %v", got)
		}
	})

	t.Run("set_state_is_one_hot", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetState(nodestatus.StateWorking)
		m.SetState(nodestatus.StateDegraded)
		f := scrape(t, base)
		if got := f.labelValues(t, metrics.NameState, "state", 1); !slices.Equal(got, []string{"Degraded"}) {
			t.Errorf("states at 1: %v, want [Degraded]", got)
		}
	})

	t.Run("phase_durations_land_in_a_histogram_per_phase", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.ObservePhaseDuration(nodestatus.PhaseStaging, 40*time.Second)
		m.ObservePhaseDuration(nodestatus.PhaseStaging, 200*time.Second)
		m.ObservePhaseDuration(nodestatus.PhaseDraining, 3*time.Second)
		f := scrape(t, base)
		h := f.one(t, metrics.NameUpdateDuration, map[string]string{"phase": "Staging"}).GetHistogram()
		if h.GetSampleCount() != 2 || h.GetSampleSum() != 240 {
			t.Errorf("Staging histogram count %d sum %v, want 2 and 240", h.GetSampleCount(), h.GetSampleSum())
		}
		if c := cumulative(h, 60); c != 1 {
			t.Errorf("Staging observations <= 60s: %d, want 1", c)
		}
		d := f.one(t, metrics.NameUpdateDuration, map[string]string{"phase": "Draining"}).GetHistogram()
		if d.GetSampleCount() != 1 || d.GetSampleSum() != 3 {
			t.Errorf("Draining histogram count %d sum %v", d.GetSampleCount(), d.GetSampleSum())
		}
	})

	t.Run("errors_reboots_and_staging_bytes_count_what_happened", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.Error(reason.DrainTimeout)
		m.Error(reason.DrainTimeout)
		m.Error(reason.SignatureRejected)
		m.Rebooted()
		m.AddStagingBytes(1 << 20)
		m.AddStagingBytes(512)
		m.SetEtcDriftFiles(3)
		f := scrape(t, base)
		for r, want := range map[reason.Code]float64{reason.DrainTimeout: 2, reason.SignatureRejected: 1, reason.StageFailed: 0} {
			if v := f.value(t, metrics.NameErrors, map[string]string{"reason": string(r)}); v != want {
				t.Errorf("errors{%s} = %v, want %v", r, v, want)
			}
		}
		for n, want := range map[string]float64{metrics.NameReboots: 1, metrics.NameStagingBytes: 1<<20 + 512,
			metrics.NameEtcDriftFiles: 3} {
			if v := f.value(t, n, nil); v != want {
				t.Errorf("%s = %v, want %v", n, v, want)
			}
		}
	})

	t.Run("changing_info_replaces_the_old_label_set", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		m.SetInfo("sha256:aaa", "")
		m.SetInfo("sha256:aaa", "sha256:bbb")
		m.SetInfo("sha256:aaa", "sha256:bbb")
		f := scrape(t, base)
		all := f.series(t, metrics.NameInfo, nil)
		if len(all) != 1 {
			t.Fatalf("%d layerd_info series, want 1: %v", len(all), all)
		}
		want := map[string]string{"node": "node-a", "booted_digest": "sha256:aaa", "staged_digest": "sha256:bbb"}
		if v := f.value(t, metrics.NameInfo, want); v != 1 {
			t.Errorf("layerd_info%v = %v, want 1", want, v)
		}
	})

	t.Run("each_instance_has_its_own_registry", func(t *testing.T) {
		a, b := metrics.New("node-a"), metrics.New("node-b")
		a.Rebooted()
		if v := scrape(t, serveMetrics(t, b)).value(t, metrics.NameReboots, nil); v != 0 {
			t.Errorf("node-b reboots = %v after node-a rebooted", v)
		}
	})

	t.Run("is_safe_for_concurrent_use_while_scraped", func(t *testing.T) {
		m := metrics.New("node-a")
		base := serveMetrics(t, m)
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for j := range 50 {
					m.SetPhase(nodestatus.Phases()[(i+j)%len(nodestatus.Phases())], t0.Add(time.Duration(j)*time.Second))
					m.SetState(nodestatus.StateWorking)
					m.SetInfo("sha256:b", []string{"", "sha256:s"}[j%2])
					m.AddStagingBytes(1)
				}
			})
		}
		wg.Go(func() {
			resp, err := http.Get(base + metrics.PathMetrics)
			if err != nil {
				t.Errorf("scrape during updates: %v", err)
				return
			}
			resp.Body.Close()
		})
		wg.Wait()
		f := scrape(t, base)
		if got := f.labelValues(t, metrics.NamePhase, "phase", 1); len(got) != 1 {
			t.Errorf("phases at 1: %v, want exactly one", got)
		}
		if n := len(f.series(t, metrics.NameInfo, nil)); n != 1 {
			t.Errorf("%d layerd_info series, want 1", n)
		}
		if v := f.value(t, metrics.NameStagingBytes, nil); v != 400 {
			t.Errorf("staging bytes %v, want 400", v)
		}
	})
}

// cumulative is the count of observations <= le.
func cumulative(h *dto.Histogram, le float64) uint64 {
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	return 0
}

func TestDocs(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^### `(layerd_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	m := metrics.New("node-a")
	m.SetInfo("", "")
	m.ObservePhaseDuration(nodestatus.PhaseStaging, time.Second)
	f := scrape(t, serveMetrics(t, m))

	t.Run("every_exposed_layerd_metric_is_documented_with_its_type", func(t *testing.T) {
		for name, fam := range f {
			if !strings.HasPrefix(name, "layerd_") {
				continue
			}
			if !documented[name] {
				t.Errorf("%s is not documented in %s", name, docPath)
				continue
			}
			typ := strings.ToLower(fam.GetType().String())
			if !regexp.MustCompile("(?s)### `" + name + "`\n+[^#]*?\\*\\*" + typ + "\\*\\*").Match(doc) {
				t.Errorf("%s: docs do not give its type **%s**", name, typ)
			}
		}
	})
	t.Run("every_documented_metric_is_exposed", func(t *testing.T) {
		for name := range documented {
			if _, ok := f[name]; !ok {
				t.Errorf("%s is documented but not exposed", name)
			}
		}
	})
	t.Run("the_health_endpoints_are_documented", func(t *testing.T) {
		for _, p := range []string{metrics.PathHealthz, metrics.PathReadyz} {
			if !strings.Contains(string(doc), "`"+p+"`") {
				t.Errorf("%s not documented", p)
			}
		}
	})
}
