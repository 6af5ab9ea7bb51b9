package harness

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
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
// exactly the permissions the shipped manifests grant. The DaemonSet is created too (no
// DaemonSet controller runs in the box): the harness's agent pods are owned by it.
func applyPackaging(ctx context.Context, c kubernetes.Interface) error {
	return ApplyPackaging(ctx, c, false)
}

// PackagingObjects decodes every manifest of packaging/kubernetes (the Kustomization aside)
// strictly: an unknown or duplicate field is an error.
func PackagingObjects() ([]runtime.Object, error) {
	files, err := fs.Glob(packaging.Kubernetes, "kubernetes/*.yaml")
	if err != nil {
		return nil, err
	}
	dec := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	var objs []runtime.Object
	for _, f := range files {
		b, err := fs.ReadFile(packaging.Kubernetes, f)
		if err != nil {
			return nil, err
		}
		for _, doc := range bytes.Split(b, []byte("\n---")) {
			if len(bytes.TrimSpace(doc)) == 0 || bytes.Contains(doc, []byte("kind: Kustomization")) {
				continue
			}
			obj, _, err := dec.Decode(doc, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("decoding %s: %w", f, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// ApplyPackaging creates the objects of packaging/kubernetes on the API server, namespaces
// first; objects that exist already are left alone. With dryRun the server validates and
// admits each object without storing it (namespaced objects then need their namespace).
func ApplyPackaging(ctx context.Context, c kubernetes.Interface, dryRun bool) error {
	objs, err := PackagingObjects()
	if err != nil {
		return err
	}
	// Namespaces first.
	for pass := 0; pass < 2; pass++ {
		for _, obj := range objs {
			_, isNS := obj.(*corev1.Namespace)
			if isNS != (pass == 0) {
				continue
			}
			if err := create(ctx, c, obj, dryRun); err != nil && !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("applying packaging: %w", err)
			}
		}
	}
	return nil
}

func create(ctx context.Context, c kubernetes.Interface, obj runtime.Object, dryRun bool) error {
	o := metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict}
	if dryRun {
		o.DryRun = []string{metav1.DryRunAll}
	}
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
	case *corev1.ConfigMap:
		_, err = c.CoreV1().ConfigMaps(v.Namespace).Create(ctx, v, o)
	case *appsv1.DaemonSet:
		_, err = c.AppsV1().DaemonSets(v.Namespace).Create(ctx, v, o)
	default:
		return fmt.Errorf("packaging holds a %T the harness cannot apply", obj)
	}
	return err
}
