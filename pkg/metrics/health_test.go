package metrics_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"layerd.dev/layerd/pkg/metrics"
)

const window = 2 * time.Minute

func serveHealth(t *testing.T, h *metrics.Health) string {
	t.Helper()
	mux := http.NewServeMux()
	h.Register(mux)
	return serve(t, mux)
}

func newHealth(t *testing.T) (*metrics.Health, *fakeClock) {
	t.Helper()
	clk := newFakeClock(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	h, err := metrics.NewHealth(window, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return h, clk
}

func TestHealth(t *testing.T) {
	t.Run("rejects_a_nil_clock_and_a_non_positive_window", func(t *testing.T) {
		if _, err := metrics.NewHealth(window, nil); err == nil {
			t.Error("nil clock accepted")
		}
		if _, err := metrics.NewHealth(0, time.Now); err == nil {
			t.Error("zero window accepted")
		}
	})

	t.Run("a_fresh_agent_is_live_for_one_window_then_stalls_without_beats", func(t *testing.T) {
		h, clk := newHealth(t)
		base := serveHealth(t, h)
		clk.Advance(window)
		if code, body := get(t, base+metrics.PathHealthz); code != http.StatusOK || strings.TrimSpace(body) != "ok" {
			t.Errorf("at the window's end: %d %q, want 200 ok", code, body)
		}
		clk.Advance(time.Second)
		code, body := get(t, base+metrics.PathHealthz)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "last beat 2m1s ago") {
			t.Errorf("past the window: %d %q, want 503 naming the last beat", code, body)
		}
	})

	t.Run("beats_keep_it_live", func(t *testing.T) {
		h, clk := newHealth(t)
		base := serveHealth(t, h)
		for range 5 {
			h.Beat(clk.Advance(window - time.Second))
		}
		clk.Advance(window - time.Second)
		if code, body := get(t, base+metrics.PathHealthz); code != http.StatusOK {
			t.Errorf("%d %q, want 200", code, body)
		}
	})

	t.Run("an_older_beat_does_not_move_the_last_beat_back", func(t *testing.T) {
		h, clk := newHealth(t)
		now := clk.Advance(window)
		h.Beat(now)
		h.Beat(now.Add(-time.Hour))
		clk.Advance(window)
		if live, since := h.Live(); !live || since != window {
			t.Errorf("live %v since %v, want true and %v", live, since, window)
		}
	})

	t.Run("readyz_is_503_starting_until_set_ready", func(t *testing.T) {
		h, _ := newHealth(t)
		base := serveHealth(t, h)
		code, body := get(t, base+metrics.PathReadyz)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, metrics.NotReadyStarting) {
			t.Errorf("before SetReady: %d %q", code, body)
		}
		h.SetReady(true, "")
		if code, body := get(t, base+metrics.PathReadyz); code != http.StatusOK {
			t.Errorf("after SetReady(true): %d %q", code, body)
		}
	})

	t.Run("readyz_names_the_reason_when_readiness_is_taken_back", func(t *testing.T) {
		h, _ := newHealth(t)
		base := serveHealth(t, h)
		h.SetReady(true, "")
		h.SetReady(false, "rpm-ostree unreachable")
		code, body := get(t, base+metrics.PathReadyz)
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "rpm-ostree unreachable") {
			t.Errorf("%d %q, want 503 with the reason", code, body)
		}
		if code, _ := get(t, base+metrics.PathHealthz); code != http.StatusOK {
			t.Errorf("healthz %d: not ready must not mean not live", code)
		}
	})
}

func TestServe(t *testing.T) {
	t.Run("returns_the_bound_address_and_stops_when_ctx_ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		addr, done, err := metrics.Serve(ctx, "127.0.0.1:0", http.NotFoundHandler())
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(addr, "127.0.0.1:") || strings.HasSuffix(addr, ":0") {
			t.Fatalf("bound address %q", addr)
		}
		if code, _ := get(t, "http://"+addr+"/x"); code != http.StatusNotFound {
			t.Errorf("served %d, want 404", code)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("end after cancel: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("server still running 10s after cancel")
		}
		if _, ok := <-done; ok {
			t.Error("done not closed after the end was sent")
		}
		if _, err := net.Dial("tcp", addr); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial after shutdown: %v, want connection refused", err)
		}
	})

	t.Run("an_address_in_use_is_an_error_naming_it", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		_, _, err = metrics.Serve(context.Background(), ln.Addr().String(), http.NotFoundHandler())
		if err == nil || !strings.Contains(err.Error(), ln.Addr().String()) || !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("err %v, want EADDRINUSE naming %s", err, ln.Addr())
		}
	})

	t.Run("rejects_a_nil_handler", func(t *testing.T) {
		if _, _, err := metrics.Serve(context.Background(), "127.0.0.1:0", nil); err == nil {
			t.Error("nil handler accepted")
		}
	})
}
