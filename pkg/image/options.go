package image

import (
	"math/rand/v2"
	"runtime"
	"time"

	"go.podman.io/image/v5/types"
	"go.uber.org/zap"
)

// Options configure a Client. The zero value reads the host's configuration from the default
// places, as rpm-ostree will: registries.conf (CONTAINERS_REGISTRIES_CONF or
// /etc/containers/registries.conf and its .d directory), registries.d, policy.json.
type Options struct {
	// RegistriesConfPath is registries.conf (mirrors, insecure, blocked, short names). Empty: the
	// library default, which honours CONTAINERS_REGISTRIES_CONF.
	RegistriesConfPath string
	// RegistriesConfDir is the registries.conf.d drop-in directory. Empty: the library default.
	RegistriesConfDir string
	// RegistriesDDir is the registries.d directory (where signatures live, e.g.
	// use-sigstore-attachments). Empty: /etc/containers/registries.d.
	RegistriesDDir string
	// PolicyPath is the signature policy. Empty: /etc/containers/policy.json.
	PolicyPath string
	// AuthFilePath is a containers auth.json / docker config.json. Empty: the library default
	// search (XDG_RUNTIME_DIR/containers/auth.json, ~/.docker/config.json, …).
	AuthFilePath string
	// BlobInfoCacheDir is handed to the library; layerd itself never writes a blob-info cache.
	BlobInfoCacheDir string

	// OS, Arch and Variant describe the node (Node.status.nodeInfo in the agent; runtime.GOOS and
	// runtime.GOARCH by default). Arch is normalised (x86_64 → amd64, aarch64 → arm64).
	OS, Arch, Variant string

	// MaxManifestSize and MaxConfigSize bound what Validate accepts (defaults 1 MiB and 4 MiB).
	MaxManifestSize, MaxConfigSize int64

	// Backoff controls retries of RegistryUnavailable failures (5xx, 429, timeouts, resets).
	Backoff Backoff
	// AttemptTimeout bounds one attempt (open, fetch) so a hanging registry is retried; the
	// caller's context bounds the whole call. Default 30s; negative disables it.
	AttemptTimeout time.Duration
	// Clock sleeps between retries. Default: the real clock.
	Clock Clock
	// Logger receives debug/info records with image and digest fields; never credentials.
	Logger *zap.Logger
}

// Backoff is capped exponential backoff with jitter: the n-th retry waits a random duration in
// [d/2, d) where d = min(Max, Initial·2^(n-1)).
type Backoff struct {
	Initial  time.Duration // default 250ms
	Max      time.Duration // default 8s
	Attempts int           // attempts including the first; default 6; 1 disables retries
	// Jitter returns a number in [0,1). Default math/rand/v2.
	Jitter func() float64
}

// Delay returns the wait before retry n (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	b = b.withDefaults()
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + time.Duration(b.Jitter()*float64(d-half))
}

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = 250 * time.Millisecond
	}
	if b.Max <= 0 {
		b.Max = 8 * time.Second
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.Attempts <= 0 {
		b.Attempts = 6
	}
	if b.Jitter == nil {
		b.Jitter = rand.Float64
	}
	return b
}

// Clock is the time source of the retry loop.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

const (
	defaultMaxManifestSize = 1 << 20
	defaultMaxConfigSize   = 4 << 20
	defaultAttemptTimeout  = 30 * time.Second
)

func (o Options) withDefaults() Options {
	if o.OS == "" {
		o.OS = runtime.GOOS
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	o.Arch = NormalizeArch(o.Arch)
	if o.MaxManifestSize <= 0 {
		o.MaxManifestSize = defaultMaxManifestSize
	}
	if o.MaxConfigSize <= 0 {
		o.MaxConfigSize = defaultMaxConfigSize
	}
	if o.AttemptTimeout == 0 {
		o.AttemptTimeout = defaultAttemptTimeout
	}
	o.Backoff = o.Backoff.withDefaults()
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return o
}

// systemContext builds the go.podman.io/image configuration. Nothing else in layerd builds one.
func (o Options) systemContext() *types.SystemContext {
	return &types.SystemContext{
		SystemRegistriesConfPath:    o.RegistriesConfPath,
		SystemRegistriesConfDirPath: o.RegistriesConfDir,
		RegistriesDirPath:           o.RegistriesDDir,
		SignaturePolicyPath:         o.PolicyPath,
		AuthFilePath:                o.AuthFilePath,
		BlobInfoCacheDir:            o.BlobInfoCacheDir,
		OSChoice:                    o.OS,
		ArchitectureChoice:          o.Arch,
		VariantChoice:               o.Variant,
		DockerRegistryUserAgent:     "layerd",
	}
}

// NormalizeArch maps kernel/RPM architecture names to the OCI (GOARCH) names images use.
func NormalizeArch(a string) string {
	switch a {
	case "x86_64", "x86-64", "x64":
		return "amd64"
	case "aarch64":
		return "arm64"
	case "i386", "i686":
		return "386"
	case "armhfp", "armv7l", "armv7hl":
		return "arm"
	}
	return a
}
