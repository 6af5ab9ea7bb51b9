package registry

import (
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Kind classifies a registry request by the distribution API endpoint it hits.
type Kind string

// Request kinds.
const (
	KindPing      Kind = "ping"      // GET/HEAD /v2/
	KindManifest  Kind = "manifest"  // /v2/<name>/manifests/<reference>
	KindBlob      Kind = "blob"      // /v2/<name>/blobs/<digest>
	KindUpload    Kind = "upload"    // /v2/<name>/blobs/uploads/...
	KindTagList   Kind = "tag-list"  // /v2/<name>/tags/list
	KindCatalog   Kind = "catalog"   // /v2/_catalog
	KindReferrers Kind = "referrers" // /v2/<name>/referrers/<digest>
	KindOther     Kind = "other"
)

// Access is one request served by the registry, as seen by the client.
type Access struct {
	Time   time.Time
	Method string
	Path   string
	Kind   Kind
	// Repo is the repository name ("fcos/os"), empty for ping and catalog.
	Repo string
	// Reference is the tag or digest of a manifest request.
	Reference string
	// Digest is the blob digest of a blob request, the digest of a finished
	// upload, or the manifest digest the registry answered with.
	Digest digest.Digest
	Status int
	// Bytes is the number of response body bytes actually sent.
	Bytes    int64
	Duration time.Duration
	// Fault describes the injected faults applied to this request ("" if none).
	Fault string
}

// route is the parsed form of a request path.
type route struct {
	kind      Kind
	repo      string
	reference string
}

// classify parses a /v2/ request path. It mirrors the ggcr registry routing.
func classify(path string) route {
	p := strings.TrimSuffix(path, "/")
	if p == "/v2" {
		return route{kind: KindPing}
	}
	if !strings.HasPrefix(p, "/v2/") {
		return route{kind: KindOther}
	}
	elem := strings.Split(strings.TrimPrefix(p, "/v2/"), "/")
	n := len(elem)
	switch {
	case n == 1 && elem[0] == "_catalog":
		return route{kind: KindCatalog}
	case n >= 3 && elem[n-3] == "blobs" && elem[n-2] == "uploads":
		return route{kind: KindUpload, repo: strings.Join(elem[:n-3], "/")}
	case n >= 2 && elem[n-1] == "uploads" && elem[n-2] == "blobs":
		return route{kind: KindUpload, repo: strings.Join(elem[:n-2], "/")}
	case n >= 3 && elem[n-2] == "blobs":
		return route{kind: KindBlob, repo: strings.Join(elem[:n-2], "/"), reference: elem[n-1]}
	case n >= 3 && elem[n-2] == "manifests":
		return route{kind: KindManifest, repo: strings.Join(elem[:n-2], "/"), reference: elem[n-1]}
	case n >= 3 && elem[n-2] == "tags" && elem[n-1] == "list":
		return route{kind: KindTagList, repo: strings.Join(elem[:n-2], "/")}
	case n >= 3 && elem[n-2] == "referrers":
		return route{kind: KindReferrers, repo: strings.Join(elem[:n-2], "/"), reference: elem[n-1]}
	}
	return route{kind: KindOther}
}

// accessDigest picks the digest worth recording for a finished request.
func accessDigest(r *http.Request, rt route, respHeader http.Header) digest.Digest {
	switch rt.kind {
	case KindBlob:
		return digest.Digest(rt.reference)
	case KindUpload:
		return digest.Digest(r.URL.Query().Get("digest"))
	case KindManifest:
		if d := respHeader.Get("Docker-Content-Digest"); d != "" {
			return digest.Digest(d)
		}
		if strings.Contains(rt.reference, ":") {
			return digest.Digest(rt.reference)
		}
	}
	return ""
}

// AccessLog returns a copy of all requests served since Start or the last
// ResetAccessLog, in completion order.
func (r *Registry) AccessLog() []Access {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Access(nil), r.log...)
}

// ResetAccessLog forgets all recorded requests.
func (r *Registry) ResetAccessLog() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = nil
}

// BlobsFetched returns the digests of successful (2xx) blob GETs in the
// access log, in order, one entry per request (a blob fetched twice appears
// twice). HEAD requests (existence checks) are not fetches. A faulted
// response (truncated, corrupted) still counts; see Access.Fault.
func (r *Registry) BlobsFetched() []digest.Digest {
	var out []digest.Digest
	for _, a := range r.AccessLog() {
		if a.Kind == KindBlob && a.Method == http.MethodGet && a.Status/100 == 2 {
			out = append(out, a.Digest)
		}
	}
	return out
}

func (r *Registry) record(a Access) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.log = append(r.log, a)
}
