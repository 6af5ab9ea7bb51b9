package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Effect is what an injected fault does to a matching request.
type Effect int

// Fault effects.
const (
	// Error answers with Fault.Status (500 if zero) and a distribution-spec
	// error body, without reaching the registry.
	Error Effect = iota + 1
	// Delay waits Fault.Latency before serving the request normally.
	Delay
	// Truncate sends the headers (with the full Content-Length) and only
	// Fault.TruncateAfter body bytes (half the body if zero), then aborts the
	// connection. Applies to GET requests only.
	Truncate
	// Corrupt flips every bit of one body byte at Fault.CorruptOffset (the
	// middle of the body if negative or zero). Headers, including
	// Docker-Content-Digest, are unchanged. Applies to GET requests only.
	Corrupt
)

func (e Effect) String() string {
	switch e {
	case Error:
		return "error"
	case Delay:
		return "delay"
	case Truncate:
		return "truncate"
	case Corrupt:
		return "corrupt"
	}
	return "effect(" + strconv.Itoa(int(e)) + ")"
}

// Fault is an injected failure. A request matches when every non-zero
// selector matches; all matching faults apply.
type Fault struct {
	Effect Effect

	// Selectors.
	Kind         Kind   // e.g. KindManifest, KindBlob; "" matches any kind
	Method       string // e.g. http.MethodGet; "" matches any method
	PathContains string // substring of the request path; "" matches any path
	// Count limits the fault to the next Count matching requests; 0 means
	// every matching request until ClearFaults.
	Count int

	// Parameters.
	Status        int           // Error: status to answer (default 500)
	Latency       time.Duration // Delay: added latency
	TruncateAfter int64         // Truncate: body bytes sent before the abort
	CorruptOffset int64         // Corrupt: offset of the flipped byte
}

func (f Fault) validate() error {
	switch f.Effect {
	case Error:
		if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
			return fmt.Errorf("invalid status %d", f.Status)
		}
	case Delay:
		if f.Latency <= 0 {
			return errors.New("delay fault needs a positive Latency")
		}
	case Truncate, Corrupt:
	default:
		return fmt.Errorf("unknown effect %d", int(f.Effect))
	}
	if f.Count < 0 {
		return fmt.Errorf("negative Count %d", f.Count)
	}
	return nil
}

func (f Fault) matches(r *http.Request, k Kind) bool {
	if (f.Effect == Truncate || f.Effect == Corrupt) && r.Method != http.MethodGet {
		return false
	}
	return (f.Kind == "" || f.Kind == k) &&
		(f.Method == "" || strings.EqualFold(f.Method, r.Method)) &&
		(f.PathContains == "" || strings.Contains(r.URL.Path, f.PathContains))
}

// activeFault is a Fault with its remaining budget.
type activeFault struct {
	Fault
	remaining int // -1: unlimited
}

// SetFault adds an injected fault. Faults accumulate until ClearFaults.
func (r *Registry) SetFault(f Fault) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("set fault: %w", err)
	}
	rem := f.Count
	if rem == 0 {
		rem = -1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, &activeFault{Fault: f, remaining: rem})
	return nil
}

// ClearFaults removes all injected faults.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = nil
}

// takeFaults returns the faults applying to r and consumes their budgets.
func (r *Registry) takeFaults(req *http.Request, k Kind) []Fault {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Fault
	kept := r.faults[:0]
	for _, f := range r.faults {
		if f.matches(req, k) {
			out = append(out, f.Fault)
			if f.remaining > 0 {
				f.remaining--
			}
		}
		if f.remaining != 0 {
			kept = append(kept, f)
		}
	}
	clear(r.faults[len(kept):])
	r.faults = kept
	return out
}

func describe(fs []Fault) string {
	names := make([]string, len(fs))
	for i, f := range fs {
		names[i] = f.Effect.String()
	}
	return strings.Join(names, ",")
}

func writeInjectedError(w http.ResponseWriter, status int) {
	if status == 0 {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":"UNKNOWN","message":"injected fault: HTTP %d"}]}`+"\n", status)
}

var errTruncated = errors.New("registry: injected truncation")

// faultWriter applies body faults (truncation, corruption) to a response.
type faultWriter struct {
	http.ResponseWriter
	truncate, corrupt       bool
	truncateAt, corruptAt   int64
	written                 int64
	truncated, wroteHeaders bool
}

func newFaultWriter(w http.ResponseWriter, fs []Fault) *faultWriter {
	fw := &faultWriter{ResponseWriter: w, truncateAt: -1, corruptAt: -1}
	for _, f := range fs {
		switch f.Effect {
		case Truncate:
			fw.truncate, fw.truncateAt = true, f.TruncateAfter
		case Corrupt:
			fw.corrupt, fw.corruptAt = true, f.CorruptOffset
		}
	}
	return fw
}

func (fw *faultWriter) WriteHeader(status int) {
	if !fw.wroteHeaders {
		fw.wroteHeaders = true
		size, err := strconv.ParseInt(fw.Header().Get("Content-Length"), 10, 64)
		if err != nil {
			size = 0
		}
		if fw.truncate && fw.truncateAt <= 0 {
			fw.truncateAt = size / 2
		}
		if fw.corrupt && fw.corruptAt <= 0 {
			fw.corruptAt = size / 2
		}
	}
	fw.ResponseWriter.WriteHeader(status)
}

func (fw *faultWriter) Write(p []byte) (int, error) {
	if !fw.wroteHeaders {
		fw.WriteHeader(http.StatusOK)
	}
	if fw.truncated {
		return 0, errTruncated
	}
	var cut bool
	if fw.truncate && fw.written+int64(len(p)) > fw.truncateAt {
		p, cut = p[:fw.truncateAt-fw.written], true
	}
	if fw.corrupt && fw.corruptAt >= fw.written && fw.corruptAt < fw.written+int64(len(p)) {
		q := append([]byte(nil), p...)
		q[fw.corruptAt-fw.written] ^= 0xff
		p = q
	}
	n, err := fw.ResponseWriter.Write(p)
	fw.written += int64(n)
	if err == nil && cut {
		fw.truncated = true
		err = errTruncated
	}
	return n, err
}
