package drain_test

import (
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"layerd.dev/layerd/pkg/drain"
)

const testNode = "node-a"

var podsGVR = schema.GroupVersionResource{Version: "v1", Resource: "pods"}

func newDrainer(t *testing.T, client kubernetes.Interface, node string, opts drain.Options) *drain.Drainer {
	t.Helper()
	d, err := drain.New(client, node, opts, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Object builders, shared by the fake-clientset and the API server tests.

func replicaSet(ns, name string, labels map[string]string) *appsv1.ReplicaSet {
	one := int32(1)
	return &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.ReplicaSetSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}}},
			},
		},
	}
}

func daemonSet(ns, name string, labels map[string]string) *appsv1.DaemonSet {
	return &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "registry.invalid/agent:1"}}},
			},
		},
	}
}

func pdb(ns, name string, minAvailable int, labels map[string]string) *policyv1.PodDisruptionBudget {
	m := intstr.FromInt(minAvailable)
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &m,
			Selector:     &metav1.LabelSelector{MatchLabels: labels},
		},
	}
}

// pod returns a pod bound to node; owner (may be nil) becomes its controller.
func pod(ns, name, node string, labels map[string]string, owner metav1.Object, kind string) *corev1.Pod {
	grace := int64(1)
	no := false
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels, UID: types.UID(ns + "-" + name)},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			TerminationGracePeriodSeconds: &grace,
			AutomountServiceAccountToken:  &no,
			Containers:                    []corev1.Container{{Name: "app", Image: "registry.invalid/app:1"}},
		},
	}
	if owner != nil {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{
			APIVersion: "apps/v1", Kind: kind, Name: owner.GetName(), UID: owner.GetUID(), Controller: &yes,
		}}
	}
	return p
}

func withEmptyDir(p *corev1.Pod) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{
		Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
	})
	return p
}

// fakeWorld is a fake clientset that serves the Eviction API: evictions are recorded and, unless
// refuse says otherwise, delete the pod.
type fakeWorld struct {
	*fake.Clientset

	mu        sync.Mutex
	evictions []*policyv1.Eviction
	refuse    func(*policyv1.Eviction) error
}

func newFakeWorld(objs ...runtime.Object) *fakeWorld {
	w := &fakeWorld{Clientset: fake.NewClientset(objs...)}
	w.Resources = []*metav1.APIResourceList{{
		GroupVersion: "v1",
		APIResources: []metav1.APIResource{
			{Name: "pods", Kind: "Pod", Namespaced: true},
			{Name: "pods/eviction", Kind: "Eviction", Group: "policy", Version: "v1", Namespaced: true},
		},
	}}
	w.PrependReactor("create", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "eviction" {
			return false, nil, nil
		}
		ev := a.(k8stesting.CreateAction).GetObject().(*policyv1.Eviction)
		w.mu.Lock()
		w.evictions = append(w.evictions, ev.DeepCopy())
		refuse := w.refuse
		w.mu.Unlock()
		if refuse != nil {
			if err := refuse(ev); err != nil {
				return true, nil, err
			}
		}
		if err := w.Tracker().Delete(podsGVR, ev.Namespace, ev.Name); err != nil {
			return true, nil, err
		}
		return true, ev, nil
	})
	return w
}

func (w *fakeWorld) refuseWith(fn func(*policyv1.Eviction) error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.refuse = fn
}

// evicted returns namespace/name of every eviction request, in order, repeats included.
func (w *fakeWorld) evicted() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, e := range w.evictions {
		out = append(out, e.Namespace+"/"+e.Name)
	}
	return out
}

func (w *fakeWorld) evictionsOf() []*policyv1.Eviction {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*policyv1.Eviction(nil), w.evictions...)
}

// pdbRefusal is the error the API server returns when a PDB forbids an eviction.
func pdbRefusal() error {
	return apierrors.NewTooManyRequests("Cannot evict pod as it would violate the pod's disruption budget.", 10)
}

// deletes returns the pod DELETE actions the fake saw.
func (w *fakeWorld) deletes() []string {
	var out []string
	for _, a := range w.Actions() {
		if a.GetVerb() == "delete" && a.GetResource().Resource == "pods" {
			out = append(out, a.(k8stesting.DeleteAction).GetName())
		}
	}
	return out
}
