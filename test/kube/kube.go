// Package kube runs a real single-member Kubernetes control plane for tests: etcd,
// kube-apiserver and (optionally) kube-controller-manager, all as child processes listening
// on 127.0.0.1 only, with PKI generated in Go and state in one work directory.
//
// Binaries come from Options.BinDir or $LAYERD_K8S_BIN (`export LAYERD_K8S_BIN=$(hack/k8s-testbin.sh)`).
package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// BinEnv names the environment variable holding the directory of the control-plane binaries.
const BinEnv = "LAYERD_K8S_BIN"

// Controllers are the kube-controller-manager controllers the test world runs.
const Controllers = "disruption,garbagecollector,serviceaccount,serviceaccount-token,namespace"

// Options configures Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver and kube-controller-manager. Default: $LAYERD_K8S_BIN.
	BinDir string
	// WorkDir holds PKI, etcd data, kubeconfig, audit log and process logs. Default: a new
	// temporary directory, removed by Stop. A given WorkDir is left in place.
	WorkDir string
	// NoControllerManager skips kube-controller-manager (it runs by default).
	NoControllerManager bool
}

// Cluster is a running control plane. Its exported fields are set by Start and read-only.
type Cluster struct {
	// Host is the API server URL, https://127.0.0.1:<port>.
	Host string
	// KubeconfigPath is an admin kubeconfig file (bearer token in group system:masters).
	KubeconfigPath string
	// AdminConfig is the admin client configuration.
	AdminConfig *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	// AuditLogPath is the API server's JSON audit log (level Metadata, no RequestReceived stage).
	AuditLogPath string
	// WorkDir is the directory holding all state and logs (etcd.log, kube-apiserver.log, ...).
	WorkDir string
	// CAData is the PEM CA bundle that signed the serving certificate.
	CAData []byte
	// StartDuration is the time Start took until every component was ready.
	StartDuration time.Duration

	bin           string
	pki           *pki
	auditPolicy   string
	removeWorkDir bool

	mu                              sync.Mutex
	etcdPort, etcdPeerPort, apiPort int
	kcmPort                         int
	etcd, api, kcm                  *process
	pids                            []int
	stopped                         bool
}

// Start generates PKI and starts etcd, kube-apiserver and kube-controller-manager, returning
// once each is ready. ctx bounds only the startup; the children run until Stop.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	began := time.Now()
	bin, err := resolveBinDir(opts.BinDir, !opts.NoControllerManager)
	if err != nil {
		return nil, err
	}
	c := &Cluster{bin: bin, WorkDir: opts.WorkDir}
	if c.WorkDir == "" {
		if c.WorkDir, err = os.MkdirTemp("", "layerd-kube-"); err != nil {
			return nil, fmt.Errorf("creating work dir: %w", err)
		}
		c.removeWorkDir = true
	} else if err := os.MkdirAll(c.WorkDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating work dir: %w", err)
	}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	if c.pki, err = generatePKI(filepath.Join(c.WorkDir, "pki")); err != nil {
		return nil, fmt.Errorf("generating PKI: %w", err)
	}
	c.CAData = c.pki.CAData
	c.AuditLogPath = filepath.Join(c.WorkDir, "audit.log")
	c.auditPolicy = filepath.Join(c.WorkDir, "audit-policy.yaml")
	if err := os.WriteFile(c.auditPolicy, []byte(auditPolicy), 0o644); err != nil {
		return nil, fmt.Errorf("writing audit policy: %w", err)
	}
	if err := c.startEtcd(ctx); err != nil {
		return nil, fmt.Errorf("starting etcd: %w", err)
	}
	if err := c.startFirstAPIServer(ctx); err != nil {
		return nil, fmt.Errorf("starting kube-apiserver: %w", err)
	}
	if !opts.NoControllerManager {
		if err := c.startControllerManager(ctx); err != nil {
			return nil, fmt.Errorf("starting kube-controller-manager: %w", err)
		}
	}
	c.StartDuration = time.Since(began)
	return c, nil
}

func resolveBinDir(dir string, withKCM bool) (string, error) {
	if dir == "" {
		dir = os.Getenv(BinEnv)
	}
	if dir == "" {
		return "", fmt.Errorf("no control-plane binaries: set Options.BinDir or $%s (export %s=$(hack/k8s-testbin.sh))", BinEnv, BinEnv)
	}
	want := []string{"etcd", "kube-apiserver"}
	if withKCM {
		want = append(want, "kube-controller-manager")
	}
	for _, b := range want {
		st, err := os.Stat(filepath.Join(dir, b))
		if err != nil {
			return "", fmt.Errorf("control-plane binary missing in %s (from $%s or Options.BinDir; build with hack/k8s-testbin.sh): %w", dir, BinEnv, err)
		}
		if st.Mode()&0o111 == 0 {
			return "", fmt.Errorf("control-plane binary %s is not executable", filepath.Join(dir, b))
		}
	}
	return dir, nil
}

// track records a started child.
func (c *Cluster) track(p *process) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pids = append(c.pids, p.pid())
}

// PIDs returns the process IDs of every child ever started (including restarted API servers).
func (c *Cluster) PIDs() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.pids...)
}

// Ports returns every TCP port the cluster listens on.
func (c *Cluster) Ports() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ports := []int{c.etcdPort, c.etcdPeerPort, c.apiPort}
	if c.kcmPort != 0 {
		ports = append(ports, c.kcmPort)
	}
	return ports
}

// StopAPIServer stops kube-apiserver only; etcd and its data stay.
func (c *Cluster) StopAPIServer() error {
	c.mu.Lock()
	api := c.api
	c.api = nil
	c.mu.Unlock()
	if api == nil {
		return nil
	}
	if err := api.stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	return nil
}

// StartAPIServer starts kube-apiserver again on the same port with the same etcd data and
// returns once it is ready.
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	running, stopped := c.api != nil, c.stopped
	c.mu.Unlock()
	if stopped {
		return errors.New("starting kube-apiserver: cluster is stopped")
	}
	if running {
		return errors.New("starting kube-apiserver: already running")
	}
	if err := c.runAPIServer(ctx); err != nil {
		return fmt.Errorf("restarting kube-apiserver: %w", err)
	}
	return nil
}

// Stop terminates every child (SIGTERM, then SIGKILL after a timeout) and removes the work
// directory if Start created it. It is safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return nil
	}
	c.stopped = true
	procs := []*process{c.kcm, c.api, c.etcd}
	c.kcm, c.api, c.etcd = nil, nil, nil
	c.mu.Unlock()
	var errs []error
	for _, p := range procs {
		if p == nil {
			continue
		}
		if err := p.stop(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.removeWorkDir {
		if err := os.RemoveAll(c.WorkDir); err != nil {
			errs = append(errs, fmt.Errorf("removing work dir: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("stopping cluster: %w", err)
	}
	return nil
}
