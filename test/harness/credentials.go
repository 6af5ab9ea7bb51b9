package harness

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// AgentKubeconfig gives the node's agent the credential a DaemonSet pod on that node has: a
// Pod object of the agent's ServiceAccount bound to this Node, and a token bound to that Pod
// (so the apiserver sees the node name in the token). It returns the kubeconfig's path.
func (n *Node) AgentKubeconfig(ctx context.Context) (string, error) {
	c := n.w.Kube.Client
	ds, err := agentDaemonSet(ctx, c)
	if err != nil {
		return "", err
	}
	name := "layerd-agent-" + n.Name
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: AgentNamespace, Labels: ds.Spec.Selector.MatchLabels,
			// Owned by the agent DaemonSet as in a cluster, so a drain leaves it alone.
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(ds, appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}},
		Spec: corev1.PodSpec{
			NodeName:           n.Name,
			ServiceAccountName: AgentServiceAccount,
			Tolerations:        []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers:         []corev1.Container{{Name: "agent", Image: "layerd:test"}},
		},
	}
	if _, err := c.CoreV1().Pods(AgentNamespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating the agent pod of %s: %w", n.Name, err)
	}
	token, err := n.w.Kube.NodeBoundToken(ctx, AgentNamespace, AgentServiceAccount, name, 24*time.Hour)
	if err != nil {
		return "", err
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["box"] = &clientcmdapi.Cluster{Server: n.w.Kube.Host, CertificateAuthorityData: n.w.Kube.CAData}
	cfg.AuthInfos["agent"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["agent@box"] = &clientcmdapi.Context{Cluster: "box", AuthInfo: "agent"}
	cfg.CurrentContext = "agent@box"
	path := filepath.Join(n.Dir, "agent.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return "", fmt.Errorf("writing the agent kubeconfig of %s: %w", n.Name, err)
	}
	return path, nil
}

// agentDaemonSet returns the DaemonSet object the agent pods belong to, creating it once. No
// DaemonSet controller runs in the box: the harness creates each node's pod itself.
func agentDaemonSet(ctx context.Context, c kubernetes.Interface) (*appsv1.DaemonSet, error) {
	labels := map[string]string{"app": "layerd-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "layerd-agent", Namespace: AgentNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{ServiceAccountName: AgentServiceAccount,
					Containers: []corev1.Container{{Name: "agent", Image: "layerd:test"}}},
			},
		},
	}
	got, err := c.AppsV1().DaemonSets(AgentNamespace).Create(ctx, ds, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		got, err = c.AppsV1().DaemonSets(AgentNamespace).Get(ctx, ds.Name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("creating the agent DaemonSet: %w", err)
	}
	return got, nil
}
