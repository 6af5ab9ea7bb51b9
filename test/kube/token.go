package kube

import (
	"context"
	"fmt"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// NodeNameExtra is the user-info extra key the API server sets on tokens bound to a Pod that
// has spec.nodeName.
const NodeNameExtra = "authentication.kubernetes.io/node-name"

// NodeBoundToken requests a ServiceAccount token bound to a Pod (TokenRequest with
// boundObjectRef). The Pod must exist, run as serviceAccount and have spec.nodeName set; the
// token's user info then carries NodeNameExtra. ttl defaults to one hour; the API server
// refuses less than ten minutes. Deleting the Pod revokes the token.
func (c *Cluster) NodeBoundToken(ctx context.Context, namespace, serviceAccount, podName string, ttl time.Duration) (string, error) {
	pod, err := c.Client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("getting pod %s/%s to bind a token to: %w", namespace, podName, err)
	}
	if pod.Spec.NodeName == "" {
		return "", fmt.Errorf("pod %s/%s has no spec.nodeName: a token bound to it would carry no node", namespace, podName)
	}
	if ttl == 0 {
		ttl = time.Hour
	}
	secs := int64(ttl / time.Second)
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: &secs,
		BoundObjectRef: &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID,
		},
	}}
	out, err := c.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, serviceAccount, req, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting token for %s/%s bound to pod %s: %w", namespace, serviceAccount, podName, err)
	}
	return out.Status.Token, nil
}
