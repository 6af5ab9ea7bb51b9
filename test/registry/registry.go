// Package registry runs an in-process OCI distribution registry on loopback
// for tests, with switchable faults and an access log.
//
// The registry is go-containerregistry's pkg/registry (manifests in memory,
// blobs on disk under Options.Dir) behind a middleware that records every
// request and injects faults (see Fault). It speaks plain HTTP on
// 127.0.0.1:<random port>.
package registry

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Options configures Start.
type Options struct {
	// Dir holds the blobs. Empty: a temporary directory removed by Close.
	Dir string
}

// Registry is a running registry. Its methods are safe for concurrent use.
type Registry struct {
	addr    string
	dir     string
	ownDir  bool
	blobs   diskBlobs
	srv     *http.Server
	served  chan error
	closing chan struct{}
	once    sync.Once

	// lifeMu orders active.Add (new requests) before active.Wait (Close).
	lifeMu sync.Mutex
	closed bool
	active sync.WaitGroup

	mu     sync.Mutex
	log    []Access
	faults []*activeFault
}

// Start listens on 127.0.0.1:0 and serves the registry until Close.
func Start(opts Options) (*Registry, error) {
	dir, own := opts.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "layerd-registry-")
		if err != nil {
			return nil, fmt.Errorf("registry: create blob dir: %w", err)
		}
		dir, own = d, true
	}
	blobDir := filepath.Join(dir, "blobs")
	if err := os.MkdirAll(blobDir, 0o755); err != nil {
		return nil, fmt.Errorf("registry: create blob dir: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		if own {
			os.RemoveAll(dir)
		}
		return nil, fmt.Errorf("registry: listen: %w", err)
	}
	r := &Registry{
		addr:    ln.Addr().String(),
		dir:     dir,
		ownDir:  own,
		blobs:   diskBlobs{dir: blobDir},
		served:  make(chan error, 1),
		closing: make(chan struct{}),
	}
	quiet := log.New(io.Discard, "", 0)
	inner := ggcr.New(ggcr.Logger(quiet), ggcr.WithBlobHandler(r.blobs))
	r.srv = &http.Server{
		Handler:           r.middleware(inner),
		ErrorLog:          quiet,
		ReadHeaderTimeout: 30 * time.Second,
	}
	go func() { r.served <- r.srv.Serve(ln) }()
	return r, nil
}

// Addr is the registry host, "127.0.0.1:PORT", usable in image references.
func (r *Registry) Addr() string { return r.addr }

// Dir is the registry's data directory.
func (r *Registry) Dir() string { return r.dir }

// BlobPath is the file holding blob d, for tests that tamper with storage.
func (r *Registry) BlobPath(d digest.Digest) string {
	return filepath.Join(r.blobs.dir, d.Algorithm().String(), d.Encoded())
}

// Close stops the listener, closes all connections, waits for in-flight
// handlers (injected delays are cut short) and removes a temporary Dir.
func (r *Registry) Close() error {
	var err error
	r.once.Do(func() {
		r.lifeMu.Lock()
		r.closed = true
		r.lifeMu.Unlock()
		close(r.closing)
		err = r.srv.Close()
		if serveErr := <-r.served; serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) {
			err = errors.Join(err, serveErr)
		}
		r.active.Wait()
		if r.ownDir {
			err = errors.Join(err, os.RemoveAll(r.dir))
		}
		if err != nil {
			err = fmt.Errorf("registry: close: %w", err)
		}
	})
	return err
}

// middleware records each request and applies the faults matching it.
func (r *Registry) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.enter() {
			http.Error(w, "registry closing", http.StatusServiceUnavailable)
			return
		}
		defer r.active.Done()
		start := time.Now()
		rt := classify(req.URL.Path)
		faults := r.takeFaults(req, rt.kind)
		rec := &recorder{ResponseWriter: w}
		fw := newFaultWriter(rec, faults)
		defer func() {
			r.record(Access{
				Time: start, Method: req.Method, Path: req.URL.Path, Kind: rt.kind,
				Repo: rt.repo, Reference: rt.reference,
				Digest: accessDigest(req, rt, w.Header()), Status: rec.status(),
				Bytes: rec.bytes, Duration: time.Since(start), Fault: describe(faults),
			})
		}()
		for _, f := range faults {
			if f.Effect == Delay && !r.sleep(req, f.Latency) {
				return
			}
		}
		for _, f := range faults {
			if f.Effect == Error {
				writeInjectedError(rec, f.Status)
				return
			}
		}
		if rt.kind == KindBlob && req.Method == http.MethodGet {
			r.completeOpenRange(req, rt.reference)
		}
		next.ServeHTTP(fw, req)
		if fw.truncated {
			// Push out what was written, then cut the connection so the
			// client sees a short body despite the full Content-Length.
			_ = http.NewResponseController(w).Flush()
			panic(http.ErrAbortHandler)
		}
	})
}

// enter registers an in-flight request unless the registry is closing.
func (r *Registry) enter() bool {
	r.lifeMu.Lock()
	defer r.lifeMu.Unlock()
	if r.closed {
		return false
	}
	r.active.Add(1)
	return true
}

// sleep waits d, or less if the client or the registry goes away. It
// reports whether the request should still be served.
func (r *Registry) sleep(req *http.Request, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-req.Context().Done():
	case <-r.closing:
	}
	return false
}

var openRange = regexp.MustCompile(`^bytes=(\d+)-$`)

// completeOpenRange rewrites "Range: bytes=N-" (sent by containers/image when
// it resumes an interrupted blob download) to "bytes=N-END", the only form
// the ggcr registry understands.
func (r *Registry) completeOpenRange(req *http.Request, ref string) {
	m := openRange.FindStringSubmatch(req.Header.Get("Range"))
	if m == nil {
		return
	}
	h, err := v1.NewHash(ref)
	if err != nil {
		return
	}
	size, err := r.blobs.Stat(req.Context(), "", h)
	if err != nil || size == 0 {
		return
	}
	req.Header.Set("Range", "bytes="+m[1]+"-"+strconv.FormatInt(size-1, 10))
}

// recorder captures the status and body size actually sent.
type recorder struct {
	http.ResponseWriter
	code  int
	bytes int64
}

func (rec *recorder) WriteHeader(code int) {
	if rec.code == 0 {
		rec.code = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(p []byte) (int, error) {
	if rec.code == 0 {
		rec.code = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(p)
	rec.bytes += int64(n)
	return n, err
}

func (rec *recorder) status() int {
	if rec.code == 0 {
		return http.StatusOK
	}
	return rec.code
}
