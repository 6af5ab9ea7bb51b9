package image_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
)

const stubManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",` +
	`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},` +
	`"layers":[]}`

// stubRegistry answers pings with 200 and manifest requests with manifest(n), n counting from 1.
type stubRegistry struct {
	srv       *httptest.Server
	manifests atomic.Int32
	challenge atomic.Bool // answer unauthenticated pings with a Basic challenge
}

func newStub(t *testing.T, manifest func(n int, w http.ResponseWriter, r *http.Request)) *stubRegistry {
	t.Helper()
	s := &stubRegistry{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			if s.challenge.Load() && r.Header.Get("Authorization") == "" {
				w.Header().Set("WWW-Authenticate", `Basic realm="stub"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusOK)
			return
		}
		if strings.Contains(r.URL.Path, "/manifests/") {
			manifest(int(s.manifests.Add(1)), w, r)
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *stubRegistry) host() string { return strings.TrimPrefix(s.srv.URL, "http://") }

func serveManifest(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	fmt.Fprint(w, stubManifest)
}

func status(code int) func(int, http.ResponseWriter, *http.Request) {
	return func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		codes := map[int]string{401: "UNAUTHORIZED", 403: "DENIED", 404: "MANIFEST_UNKNOWN"}
		if c, ok := codes[code]; ok {
			fmt.Fprintf(w, `{"errors":[{"code":%q,"message":"stub"}]}`, c)
		}
	}
}

func codeOf(t *testing.T, err error) reason.Code {
	t.Helper()
	var ie *image.Error
	if !errors.As(err, &ie) {
		t.Fatalf("error %v (%T) is not an *image.Error", err, err)
	}
	if strings.Contains(ie.Error(), "\n") {
		t.Errorf("message is not one line: %q", ie.Error())
	}
	return ie.Code
}

func TestResolveRetries(t *testing.T) {
	t.Parallel()
	t.Run("retries_5xx_twice_then_succeeds", func(t *testing.T) {
		s := newStub(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n <= 2 {
				w.WriteHeader(http.StatusInternalServerError)
				return
			}
			serveManifest(w)
		})
		clock := newFakeClock()
		opts := baseOptions(t, insecureConf(s.host()))
		opts.Clock = clock
		res, err := newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(res.Pinned, s.host()+"/os@sha256:") {
			t.Errorf("pinned = %s", res.Pinned)
		}
		if got := len(clock.Delays()); got != 2 {
			t.Errorf("slept %d times, want 2", got)
		}
	})
	t.Run("gives_up_with_RegistryUnavailable_after_the_attempts_with_growing_jittered_delays", func(t *testing.T) {
		s := newStub(t, status(http.StatusServiceUnavailable))
		clock := newFakeClock()
		opts := baseOptions(t, insecureConf(s.host()))
		opts.Clock = clock
		_, err := newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1")
		if c := codeOf(t, err); c != reason.RegistryUnavailable {
			t.Fatalf("code %s: %v", c, err)
		}
		if n := s.manifests.Load(); n != 4 {
			t.Errorf("%d manifest requests, want 4 attempts", n)
		}
		d := clock.Delays()
		if len(d) != 3 {
			t.Fatalf("delays %v", d)
		}
		for i, want := range []time.Duration{10, 20, 40} {
			want *= time.Millisecond
			if d[i] < want/2 || d[i] >= want {
				t.Errorf("delay %d = %v, want in [%v, %v)", i+1, d[i], want/2, want)
			}
		}
	})
	t.Run("retries_429", func(t *testing.T) {
		s := newStub(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				w.WriteHeader(http.StatusTooManyRequests)
				return
			}
			serveManifest(w)
		})
		opts := baseOptions(t, insecureConf(s.host()))
		opts.Clock = newFakeClock()
		if _, err := newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("retries_a_reset_connection", func(t *testing.T) {
		s := newStub(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				conn, _, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				if tc, ok := conn.(*net.TCPConn); ok {
					_ = tc.SetLinger(0) // RST instead of FIN
				}
				_ = conn.Close()
				return
			}
			serveManifest(w)
		})
		opts := baseOptions(t, insecureConf(s.host()))
		opts.Clock = newFakeClock()
		if _, err := newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1"); err != nil {
			t.Fatal(err)
		}
		if n := s.manifests.Load(); n != 2 {
			t.Errorf("%d manifest requests, want 2", n)
		}
	})
	t.Run("retries_a_hanging_registry_per_attempt_and_stops_at_the_callers_deadline", func(t *testing.T) {
		s := newStub(t, func(n int, w http.ResponseWriter, r *http.Request) {
			<-r.Context().Done()
		})
		opts := baseOptions(t, insecureConf(s.host()))
		opts.AttemptTimeout = 100 * time.Millisecond
		opts.Backoff = image.Backoff{Attempts: 100, Initial: 10 * time.Millisecond, Max: 20 * time.Millisecond}
		ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := newClient(t, opts).Resolve(ctx, s.host()+"/os:1")
		if c := codeOf(t, err); c != reason.RegistryUnavailable {
			t.Fatalf("code %s: %v", c, err)
		}
		if el := time.Since(start); el > 1700*time.Millisecond {
			t.Errorf("took %v, well beyond the 700ms deadline", el)
		}
		if n := s.manifests.Load(); n < 2 {
			t.Errorf("%d attempts, want several", n)
		}
	})
}

func TestResolveDoesNotRetryPermanentAnswers(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		want   reason.Code
	}{
		{"401_is_Unauthorized", 401, reason.Unauthorized},
		{"403_is_Unauthorized", 403, reason.Unauthorized},
		{"404_is_ImageNotFound", 404, reason.ImageNotFound},
	} {
		t.Run(tc.name+"_without_retry", func(t *testing.T) {
			s := newStub(t, status(tc.status))
			clock := newFakeClock()
			opts := baseOptions(t, insecureConf(s.host()))
			opts.Clock = clock
			_, err := newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1")
			if c := codeOf(t, err); c != tc.want {
				t.Fatalf("code %s, want %s: %v", c, tc.want, err)
			}
			if !strings.Contains(err.Error(), s.host()+"/os:1") {
				t.Errorf("message does not name the image: %v", err)
			}
			if n := s.manifests.Load(); n != 1 || len(clock.Delays()) != 0 {
				t.Errorf("%d requests, %d sleeps; want 1 and 0", n, len(clock.Delays()))
			}
		})
	}
}

func TestCredentials(t *testing.T) {
	t.Parallel()
	const user, pass = "robot", "s3cret-Pa55"
	t.Run("are_sent_from_the_auth_file_and_never_appear_in_errors", func(t *testing.T) {
		var sawAuth atomic.Bool
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
		s := newStub(t, func(n int, w http.ResponseWriter, r *http.Request) {
			if r.Header.Get("Authorization") == want {
				sawAuth.Store(true)
			}
			status(http.StatusForbidden)(n, w, r)
		})
		s.challenge.Store(true)
		opts := baseOptions(t, insecureConf(s.host()))
		secret := fmt.Sprintf(`{"auths":{%q:{"username":%q,"password":%q}}}`, s.host(), user, pass)
		authJSON, err := image.AuthJSON([]byte(secret))
		if err != nil {
			t.Fatal(err)
		}
		if err := image.WriteAuthFile(opts.AuthFilePath, authJSON); err != nil {
			t.Fatal(err)
		}
		_, err = newClient(t, opts).Resolve(context.Background(), s.host()+"/os:1")
		if c := codeOf(t, err); c != reason.Unauthorized {
			t.Fatalf("code %s: %v", c, err)
		}
		if !sawAuth.Load() {
			t.Error("registry never saw the credentials")
		}
		if strings.Contains(err.Error(), pass) || strings.Contains(err.Error(), base64.StdEncoding.EncodeToString([]byte(user+":"+pass))) {
			t.Errorf("error leaks the secret: %v", err)
		}
	})
}
