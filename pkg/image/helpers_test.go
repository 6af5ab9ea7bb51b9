package image_test

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"layerd.dev/layerd/pkg/image"
)

// fakeClock fires every After at once and records the requested delays.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	delays []time.Duration
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.delays = append(c.delays, d)
	c.now = c.now.Add(d)
	ch := make(chan time.Time, 1)
	ch <- c.now
	return ch
}

func (c *fakeClock) Delays() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.delays...)
}

// writeFile writes content to dir/name and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// insecureConf is a registries.conf that lets the client talk plain HTTP to hosts.
func insecureConf(hosts ...string) string {
	s := "unqualified-search-registries = []\n"
	for _, h := range hosts {
		s += "[[registry]]\nlocation = \"" + h + "\"\ninsecure = true\n"
	}
	return s
}

// baseOptions isolates a client from the host's /etc/containers and $HOME.
func baseOptions(t *testing.T, conf string) image.Options {
	t.Helper()
	dir := t.TempDir()
	return image.Options{
		RegistriesConfPath: writeFile(t, dir, "registries.conf", conf),
		RegistriesConfDir:  filepath.Join(dir, "registries.conf.d"),
		RegistriesDDir:     filepath.Join(dir, "registries.d"),
		PolicyPath:         writeFile(t, dir, "policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`),
		AuthFilePath:       writeFile(t, dir, "auth.json", `{"auths":{}}`),
		BlobInfoCacheDir:   filepath.Join(dir, "cache"),
		OS:                 "linux",
		Arch:               "amd64",
		Logger:             zaptest.NewLogger(t),
		Backoff:            image.Backoff{Attempts: 4, Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond},
	}
}

func newClient(t *testing.T, opts image.Options) *image.Client {
	t.Helper()
	c, err := image.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
