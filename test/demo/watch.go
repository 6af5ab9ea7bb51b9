package main

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"layerd.dev/layerd/test/harness"
)

// progress prints each transition the harness's TransitionWatcher reports and remembers when
// each node first entered each phase (its Label).
type progress struct {
	registry string // stripped from messages, as are digests beyond 12 hex digits
	t0       time.Time
	mu       sync.Mutex
	first    map[string]map[string]time.Time
}

var longDigest = regexp.MustCompile(`(sha256:[0-9a-f]{12})[0-9a-f]{52}`)

func newProgress(registry string, t0 time.Time) *progress {
	return &progress{registry: registry, t0: t0, first: map[string]map[string]time.Time{}}
}

func (p *progress) shorten(msg string) string {
	if p.registry != "" {
		msg = strings.ReplaceAll(msg, p.registry+"/", "")
	}
	return longDigest.ReplaceAllString(msg, "$1")
}

func (p *progress) firstSeen() map[string]map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.first
}

// note is the watcher's callback.
func (p *progress) note(tr harness.Transition) {
	s, label := tr.Status, tr.Label()
	p.mu.Lock()
	if p.first[tr.Node] == nil {
		p.first[tr.Node] = map[string]time.Time{}
	}
	if _, ok := p.first[tr.Node][label]; !ok {
		p.first[tr.Node][label] = tr.At
	}
	p.mu.Unlock()
	detail := string(s.Reason)
	if msg := p.shorten(s.Message); msg != "" {
		if detail != "" && !strings.HasPrefix(msg, detail) {
			detail += ": " + msg
		} else {
			detail = msg
		}
	}
	if len(detail) > 100 {
		detail = detail[:97] + "..."
	}
	out.printf("%-12s %-7s %-8s %-9s %-15s %s", tr.At.Format("15:04:05.000"), fmt.Sprintf("+%.1fs", tr.At.Sub(p.t0).Seconds()),
		tr.Node, s.State, s.Phase, detail)
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
			if line := string(l.buf[:i]); strings.Contains(line, "rebooting") || strings.Contains(line, ": booted") || strings.Contains(line, ": boot ") {
				out.printf("%-12s %-7s %s", now.Format("15:04:05.000"), "", line)
			}
		}
		l.buf = l.buf[i+1:]
	}
}
