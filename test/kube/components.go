package kube

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/client-go/kubernetes"
)

// portAttempts is how often a component is retried with fresh ports when another process
// grabbed a port between choosing and binding it.
const portAttempts = 3

// readyTimeout bounds the wait for one component's health endpoint.
const readyTimeout = 2 * time.Minute

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

func (c *Cluster) startEtcd(ctx context.Context) error {
	dataDir := filepath.Join(c.WorkDir, "etcd")
	var lastErr error
	for range portAttempts {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		if err := os.RemoveAll(dataDir); err != nil {
			return fmt.Errorf("clearing etcd data dir: %w", err)
		}
		client, peer := "http://"+hostPort(ports[0]), "http://"+hostPort(ports[1])
		p, err := startProcess("etcd", filepath.Join(c.bin, "etcd"), []string{
			"--name=default",
			"--data-dir=" + dataDir,
			"--listen-client-urls=" + client,
			"--advertise-client-urls=" + client,
			"--listen-peer-urls=" + peer,
			"--initial-advertise-peer-urls=" + peer,
			"--initial-cluster=default=" + peer,
			"--unsafe-no-fsync=true",
			"--log-level=warn",
		}, filepath.Join(c.WorkDir, "etcd.log"))
		if err != nil {
			return err
		}
		c.track(p)
		c.mu.Lock()
		c.etcd, c.etcdPort, c.etcdPeerPort = p, ports[0], ports[1]
		c.mu.Unlock()
		lastErr = waitHTTP(ctx, p, http.DefaultClient, client+"/health", "")
		if lastErr == nil {
			return nil
		}
		_ = p.stop()
		if !addrInUse(p) {
			return lastErr
		}
	}
	return lastErr
}

func (c *Cluster) startFirstAPIServer(ctx context.Context) error {
	var lastErr error
	for range portAttempts {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		c.mu.Lock()
		c.apiPort = ports[0]
		c.mu.Unlock()
		c.Host = "https://" + hostPort(ports[0])
		if err := c.initClients(); err != nil {
			return err
		}
		lastErr = c.runAPIServer(ctx)
		if lastErr == nil {
			return nil
		}
		c.mu.Lock()
		p := c.api
		c.api = nil
		c.mu.Unlock()
		if p == nil || !addrInUse(p) {
			return lastErr
		}
	}
	return lastErr
}

// initClients writes the admin kubeconfig and builds AdminConfig and Client for c.Host.
func (c *Cluster) initClients() error {
	c.AdminConfig = c.ConfigForToken(c.pki.AdminToken)
	c.KubeconfigPath = filepath.Join(c.WorkDir, "admin.kubeconfig")
	if err := writeKubeconfig(c.KubeconfigPath, c.Host, c.pki.CAData, c.pki.AdminToken); err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(c.AdminConfig)
	if err != nil {
		return fmt.Errorf("creating admin client: %w", err)
	}
	c.Client = cs
	return nil
}

// runAPIServer starts kube-apiserver on c.apiPort and waits for /readyz.
func (c *Cluster) runAPIServer(ctx context.Context) error {
	c.mu.Lock()
	apiPort, etcdPort := c.apiPort, c.etcdPort
	c.mu.Unlock()
	p, err := startProcess("kube-apiserver", filepath.Join(c.bin, "kube-apiserver"), []string{
		"--etcd-servers=http://" + hostPort(etcdPort),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(c.WorkDir, "apiserver-certs"),
		"--tls-cert-file=" + c.pki.ServingCertFile,
		"--tls-private-key-file=" + c.pki.ServingKeyFile,
		"--client-ca-file=" + c.pki.CAFile,
		"--token-auth-file=" + c.pki.TokensFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + c.pki.SAPubFile,
		"--service-account-signing-key-file=" + c.pki.SAKeyFile,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		"--audit-policy-file=" + c.auditPolicy,
		"--audit-log-path=" + c.AuditLogPath,
		"--audit-log-mode=blocking",
		"--audit-log-maxsize=0",
		// Without this, SIGTERM waits --request-timeout (60s) for open watches to end;
		// with it, the HTTP server shutdown times out after 2s.
		"--shutdown-send-retry-after=true",
	}, filepath.Join(c.WorkDir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	c.track(p)
	c.mu.Lock()
	c.api = p
	c.mu.Unlock()
	hc, err := c.httpsClient()
	if err != nil {
		return err
	}
	return waitHTTP(ctx, p, hc, c.Host+"/readyz", c.pki.AdminToken)
}

func (c *Cluster) startControllerManager(ctx context.Context) error {
	hc, err := c.httpsClient()
	if err != nil {
		return err
	}
	var lastErr error
	for range portAttempts {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		p, err := startProcess("kube-controller-manager", filepath.Join(c.bin, "kube-controller-manager"), []string{
			"--kubeconfig=" + c.KubeconfigPath,
			"--controllers=" + Controllers,
			"--service-account-private-key-file=" + c.pki.SAKeyFile,
			"--root-ca-file=" + c.pki.CAFile,
			"--use-service-account-credentials=false",
			"--leader-elect=false",
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--tls-cert-file=" + c.pki.ServingCertFile,
			"--tls-private-key-file=" + c.pki.ServingKeyFile,
		}, filepath.Join(c.WorkDir, "kube-controller-manager.log"))
		if err != nil {
			return err
		}
		c.track(p)
		c.mu.Lock()
		c.kcm, c.kcmPort = p, ports[0]
		c.mu.Unlock()
		lastErr = waitHTTP(ctx, p, hc, "https://"+hostPort(ports[0])+"/healthz", "")
		if lastErr == nil {
			return nil
		}
		_ = p.stop()
		if !addrInUse(p) {
			return lastErr
		}
	}
	return lastErr
}

func (c *Cluster) httpsClient() (*http.Client, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.pki.CAData) {
		return nil, fmt.Errorf("parsing generated CA")
	}
	return &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}, nil
}

// waitHTTP polls url until it answers 200, failing early (with the log tail) if p exits.
func waitHTTP(ctx context.Context, p *process, hc *http.Client, url, token string) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := "no answer yet"
	for {
		if gone, err := p.exited(); gone {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("building request for %s: %w", url, err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := hc.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s (%w); last answer: %s; log tail:\n%s", p.name, url, ctx.Err(), last, p.logTail())
		case <-tick.C:
		}
	}
}
