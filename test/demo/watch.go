package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	corev1 "k8s.io/api/core/v1"

	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"layerd.dev/layerd/pkg/nodestatus"
)

// watcher follows every Node, prints each transition of state/phase/reason and remembers when
// each node entered each phase and which nodes were disrupted (Draining/Rebooting) together.
type watcher struct {
	registry string // stripped from messages, as are digests beyond 12 hex digits
	mu       sync.Mutex
	t0       time.Time
	printing bool
	last     map[string]string
	first    map[string]map[string]time.Time
	disrupt  map[string]bool
	overlap  []string
	werr     error
	ready    chan struct{}
	once     sync.Once
}

var longDigest = regexp.MustCompile(`(sha256:[0-9a-f]{12})[0-9a-f]{52}`)

func (wt *watcher) shorten(msg string) string {
	if wt.registry != "" {
		msg = strings.ReplaceAll(msg, wt.registry+"/", "")
	}
	return longDigest.ReplaceAllString(msg, "$1")
}

func newWatcher(registry string) *watcher {
	return &watcher{registry: registry, last: map[string]string{}, first: map[string]map[string]time.Time{}, disrupt: map[string]bool{}, ready: make(chan struct{})}
}

// start begins printing and recording; earlier events only set the baseline.
func (wt *watcher) start(t0 time.Time) {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	wt.t0, wt.printing = t0, true
}

func (wt *watcher) synced(ctx context.Context) error {
	select {
	case <-wt.ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("the Node watch did not start within 30s")
	}
}

func (wt *watcher) err() error {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.werr
}

func (wt *watcher) overlaps() []string {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return append([]string(nil), wt.overlap...)
}

func (wt *watcher) firstSeen() map[string]map[string]time.Time {
	wt.mu.Lock()
	defer wt.mu.Unlock()
	return wt.first
}

func (wt *watcher) note(n *corev1.Node) {
	s := nodestatus.Read(n)
	key := fmt.Sprintf("%s/%s/%s", s.State, s.Phase, s.Reason)
	now := time.Now()
	wt.mu.Lock()
	defer wt.mu.Unlock()
	if wt.last[n.Name] == key {
		return
	}
	wt.last[n.Name] = key
	wt.disrupt[n.Name] = s.State == nodestatus.StateWorking && (s.Phase == nodestatus.PhaseDraining || s.Phase == nodestatus.PhaseRebooting)
	if !wt.printing {
		return
	}
	var together []string
	for name, d := range wt.disrupt {
		if d {
			together = append(together, name)
		}
	}
	if len(together) > 1 {
		sort.Strings(together)
		wt.overlap = append(wt.overlap, fmt.Sprintf("%s at +%.1fs", strings.Join(together, " and "), now.Sub(wt.t0).Seconds()))
	}
	label := string(s.Phase)
	if s.State != nodestatus.StateWorking {
		label = string(s.State)
	}
	if wt.first[n.Name] == nil {
		wt.first[n.Name] = map[string]time.Time{}
	}
	if _, ok := wt.first[n.Name][label]; !ok {
		wt.first[n.Name][label] = now
	}
	detail := string(s.Reason)
	if msg := wt.shorten(s.Message); msg != "" {
		if detail != "" && !strings.HasPrefix(msg, detail) {
			detail += ": " + msg
		} else {
			detail = msg
		}
	}
	if len(detail) > 100 {
		detail = detail[:97] + "..."
	}
	out.printf("%-12s %-7s %-8s %-9s %-15s %s", now.Format("15:04:05.000"), fmt.Sprintf("+%.1fs", now.Sub(wt.t0).Seconds()),
		n.Name, s.State, s.Phase, detail)
}

// run lists and watches the Nodes until ctx ends, re-watching on a dropped watch.
func (wt *watcher) run(ctx context.Context, kube kubernetes.Interface) error {
	for ctx.Err() == nil {
		list, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			if ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
			continue
		}
		for i := range list.Items {
			wt.note(&list.Items[i])
		}
		wt.once.Do(func() { close(wt.ready) })
		wi, err := kube.CoreV1().Nodes().Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
		if err != nil {
			continue
		}
		for ev := range wi.ResultChan() {
			if ev.Type == watch.Error {
				break
			}
			if n, ok := ev.Object.(*corev1.Node); ok && (ev.Type == watch.Added || ev.Type == watch.Modified) {
				wt.note(n)
			}
		}
		wi.Stop()
	}
	return nil
}

// lineWriter stamps each line of the harness's progress log.
type lineWriter struct {
	mu   sync.Mutex
	w    io.Writer
	buf  []byte
	echo atomic.Bool
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		now := time.Now()
		fmt.Fprintf(l.w, "%s %s\n", now.Format("15:04:05.000"), l.buf[:i])
		if l.echo.Load() { // reboots as the box performs them, among the transitions
			if line := string(l.buf[:i]); strings.Contains(line, "rebooting") || strings.Contains(line, ": booted") {
				out.printf("%-12s %-7s %s", now.Format("15:04:05.000"), "", line)
			}
		}
		l.buf = l.buf[i+1:]
	}
}
