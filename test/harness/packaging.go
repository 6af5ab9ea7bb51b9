package harness

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"

	"layerd.dev/layerd/packaging"
)

// AgentNamespace and AgentServiceAccount are where packaging/ puts the agent.
const (
	AgentNamespace      = "layerd-system"
	AgentServiceAccount = "layerd"
)

// applyPackaging creates the objects of packaging/kubernetes, so agents in the tests run with
// exactly the permissions the shipped manifests grant.
func applyPackaging(ctx context.Context, c kubernetes.Interface) error {
	files, err := fs.Glob(packaging.Kubernetes, "kubernetes/*.yaml")
	if err != nil {
		return err
	}
	dec := scheme.Codecs.UniversalDeserializer()
	var objs []runtime.Object
	for _, f := range files {
		b, err := fs.ReadFile(packaging.Kubernetes, f)
		if err != nil {
			return err
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 || bytes.Contains(doc, []byte("kind: Kustomization")) {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				return fmt.Errorf("decoding %s: %w", f, err)
			}
			objs = append(objs, obj)
		}
	}
	// Namespaces first.
	for pass := 0; pass < 2; pass++ {
		for _, obj := range objs {
			_, isNS := obj.(*corev1.Namespace)
			if isNS != (pass == 0) {
				continue
			}
			if err := create(ctx, c, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("applying packaging: %w", err)
			}
		}
	}
	return nil
}

func create(ctx context.Context, c kubernetes.Interface, obj runtime.Object) error {
	o := metav1.CreateOptions{}
	var err error
	switch v := obj.(type) {
	case *corev1.Namespace:
		_, err = c.CoreV1().Namespaces().Create(ctx, v, o)
	case *corev1.ServiceAccount:
		_, err = c.CoreV1().ServiceAccounts(v.Namespace).Create(ctx, v, o)
	case *rbacv1.ClusterRole:
		_, err = c.RbacV1().ClusterRoles().Create(ctx, v, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = c.RbacV1().ClusterRoleBindings().Create(ctx, v, o)
	case *rbacv1.Role:
		_, err = c.RbacV1().Roles(v.Namespace).Create(ctx, v, o)
	case *rbacv1.RoleBinding:
		_, err = c.RbacV1().RoleBindings(v.Namespace).Create(ctx, v, o)
	default:
		return fmt.Errorf("packaging holds a %T the harness cannot apply", obj)
	}
	return err
}
