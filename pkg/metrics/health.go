package metrics

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// Paths of the health endpoints.
const (
	PathHealthz = "/healthz"
	PathReadyz  = "/readyz"
	PathMetrics = "/metrics"
)

// NotReadyStarting is the readiness reason before the first SetReady.
const NotReadyStarting = "starting"

// Health answers /healthz (liveness) and /readyz (readiness).
//
// Liveness: the process is alive and its loop called Beat within the window. The construction
// time counts as the first beat, so a fresh agent has one window to start its loop.
// Readiness: SetReady(true, …) was called, which the agent does once its Node watch has synced
// and rpm-ostree answered; SetReady(false, reason) takes it back with a reason shown on /readyz.
type Health struct {
	now    func() time.Time
	window time.Duration

	mu       sync.Mutex
	lastBeat time.Time
	ready    bool
	reason   string
}

// NewHealth returns a Health whose loop must beat at least every window, reading time from now.
func NewHealth(window time.Duration, now func() time.Time) (*Health, error) {
	if now == nil {
		return nil, errors.New("metrics.NewHealth: nil clock")
	}
	if window <= 0 {
		return nil, fmt.Errorf("metrics.NewHealth: window %v must be positive", window)
	}
	return &Health{now: now, window: window, lastBeat: now(), reason: NotReadyStarting}, nil
}

// Beat records that the agent's loop ran at now.
func (h *Health) Beat(now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if now.After(h.lastBeat) {
		h.lastBeat = now
	}
}

// SetReady records readiness; reason says why the agent is not ready (ignored when ready).
func (h *Health) SetReady(ready bool, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ready, h.reason = ready, reason
	if ready {
		h.reason = ""
	}
}

// Live reports whether the loop beat within the window, and how long ago it beat.
func (h *Health) Live() (bool, time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	since := h.now().Sub(h.lastBeat)
	return since <= h.window, since
}

// Ready reports readiness and, when not ready, why.
func (h *Health) Ready() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ready, h.reason
}

// Healthz answers 200 while Live, 503 naming the age of the last beat otherwise.
func (h *Health) Healthz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		live, since := h.Live()
		if !live {
			text(w, http.StatusServiceUnavailable, fmt.Sprintf("loop stalled: last beat %v ago (window %v)",
				since.Round(time.Second), h.window))
			return
		}
		text(w, http.StatusOK, "ok")
	})
}

// Readyz answers 200 once ready, 503 with the reason otherwise.
func (h *Health) Readyz() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if ready, why := h.Ready(); !ready {
			text(w, http.StatusServiceUnavailable, "not ready: "+why)
			return
		}
		text(w, http.StatusOK, "ok")
	})
}

// Register mounts Healthz and Readyz on mux at /healthz and /readyz.
func (h *Health) Register(mux *http.ServeMux) {
	mux.Handle(PathHealthz, h.Healthz())
	mux.Handle(PathReadyz, h.Readyz())
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = fmt.Fprintln(w, body) // the client hung up; nothing to report it to
}
