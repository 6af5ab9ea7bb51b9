package metrics_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"layerd.dev/layerd/pkg/metrics"
)

// serve runs h on 127.0.0.1:0 for the test's lifetime and returns its base URL.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addr, done, err := metrics.Serve(ctx, "127.0.0.1:0", h)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server end: %v", err)
		}
	})
	return "http://" + addr
}

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading %s: %v", url, err)
	}
	return resp.StatusCode, string(b)
}

// scrape fetches base/metrics over HTTP and parses the text exposition format.
func scrape(t *testing.T, base string) families {
	t.Helper()
	code, body := get(t, base+metrics.PathMetrics)
	if code != http.StatusOK {
		t.Fatalf("scrape: HTTP %d: %s", code, body)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing scrape: %v\n%s", err, body)
	}
	return families(fams)
}

type families map[string]*dto.MetricFamily

// series returns the metrics of family name whose labels include want; it fails the test when
// the family does not exist.
func (f families) series(t *testing.T, name string, want map[string]string) []*dto.Metric {
	t.Helper()
	fam, ok := f[name]
	if !ok {
		t.Fatalf("no metric family %s", name)
	}
	var out []*dto.Metric
	for _, m := range fam.GetMetric() {
		if hasLabels(m, want) {
			out = append(out, m)
		}
	}
	return out
}

// one returns the single series of name with labels want.
func (f families) one(t *testing.T, name string, want map[string]string) *dto.Metric {
	t.Helper()
	s := f.series(t, name, want)
	if len(s) != 1 {
		t.Fatalf("%s%v: %d series, want 1", name, want, len(s))
	}
	return s[0]
}

// value is the gauge or counter value of the single series of name with labels want.
func (f families) value(t *testing.T, name string, want map[string]string) float64 {
	t.Helper()
	m := f.one(t, name, want)
	switch {
	case m.GetGauge() != nil:
		return m.GetGauge().GetValue()
	case m.GetCounter() != nil:
		return m.GetCounter().GetValue()
	}
	t.Fatalf("%s%v is neither a gauge nor a counter", name, want)
	return 0
}

// labelValues returns the values of label across every series of name with value v.
func (f families) labelValues(t *testing.T, name, label string, v float64) []string {
	t.Helper()
	var out []string
	for _, m := range f.series(t, name, nil) {
		if m.GetGauge().GetValue() != v {
			continue
		}
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				out = append(out, l.GetValue())
			}
		}
	}
	return out
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// fakeClock is a settable clock safe for concurrent reads.
type fakeClock struct{ ch chan time.Time }

func newFakeClock(t0 time.Time) *fakeClock {
	c := &fakeClock{ch: make(chan time.Time, 1)}
	c.ch <- t0
	return c
}

func (c *fakeClock) Now() time.Time {
	t := <-c.ch
	c.ch <- t
	return t
}

func (c *fakeClock) Advance(d time.Duration) time.Time {
	t := (<-c.ch).Add(d)
	c.ch <- t
	return t
}
