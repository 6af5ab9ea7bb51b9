package kube

import (
	"fmt"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// ConfigForToken returns a client configuration for the API server authenticating with a
// bearer token.
func (c *Cluster) ConfigForToken(token string) *rest.Config {
	return &rest.Config{
		Host:            c.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), c.CAData...)},
		QPS:             200,
		Burst:           400,
	}
}

func writeKubeconfig(path, host string, caData []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["layerd-test"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: caData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["admin@layerd-test"] = &clientcmdapi.Context{Cluster: "layerd-test", AuthInfo: "admin"}
	cfg.CurrentContext = "admin@layerd-test"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing kubeconfig: %w", err)
	}
	return nil
}
