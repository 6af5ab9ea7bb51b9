package kube_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"layerd.dev/layerd/test/kube"
)

func TestNodes(t *testing.T) {
	t.Run("a watch by name sees an annotation patch", func(t *testing.T) {
		c, ctx := cluster(t), testContext(t)
		nodes := c.Client.CoreV1().Nodes()
		node, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "watch-node"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating node: %v", err)
		}
		t.Cleanup(func() { _ = nodes.Delete(ctx, node.Name, metav1.DeleteOptions{}) })
		w, err := nodes.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", node.Name).String(),
			ResourceVersion: node.ResourceVersion,
		})
		if err != nil {
			t.Fatalf("watching node: %v", err)
		}
		defer w.Stop()
		patch := []byte(`{"metadata":{"annotations":{"layerd.dev/test":"seen"}}}`)
		if _, err := nodes.Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("patching node: %v", err)
		}
		timeout := time.After(10 * time.Second)
		for {
			select {
			case ev, ok := <-w.ResultChan():
				if !ok {
					t.Fatal("watch closed before the change arrived")
				}
				n, isNode := ev.Object.(*corev1.Node)
				if ev.Type == watch.Modified && isNode && n.Annotations["layerd.dev/test"] == "seen" {
					return
				}
			case <-timeout:
				t.Fatal("watch did not see the annotation within 10s")
			}
		}
	})
}

func TestLeases(t *testing.T) {
	t.Run("exactly one of five racing clients takes the lease each round", func(t *testing.T) {
		const clients, rounds = 5, 100
		c, ctx := cluster(t), testContext(t)
		ns := namespace(t, c.Client, "lease")
		cs := make([]kubernetes.Interface, clients)
		for i := range cs {
			var err error
			if cs[i], err = kubernetes.NewForConfig(rest.CopyConfig(c.AdminConfig)); err != nil {
				t.Fatalf("creating client %d: %v", i, err)
			}
		}
		var current *coordinationv1.Lease
		for round := range rounds {
			errs := make([]error, clients)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range clients {
				wg.Go(func() {
					holder := fmt.Sprintf("client-%d", i)
					leases := cs[i].CoordinationV1().Leases(ns)
					<-start
					if current == nil {
						_, errs[i] = leases.Create(ctx, &coordinationv1.Lease{
							ObjectMeta: metav1.ObjectMeta{Name: "race"},
							Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder},
						}, metav1.CreateOptions{})
						return
					}
					// Every update changes the object: a no-op update succeeds without a
					// write and would let a second client win with the same resourceVersion.
					l := current.DeepCopy() // carries the resourceVersion all clients read
					l.Spec.HolderIdentity = &holder
					transitions := int32(round)
					l.Spec.LeaseTransitions = &transitions
					_, errs[i] = leases.Update(ctx, l, metav1.UpdateOptions{})
				})
			}
			close(start)
			wg.Wait()
			winner := -1
			for i, err := range errs {
				switch {
				case err == nil && winner >= 0:
					t.Fatalf("round %d: clients %d and %d both won", round, winner, i)
				case err == nil:
					winner = i
				case round == 0 && apierrors.IsAlreadyExists(err), round > 0 && apierrors.IsConflict(err):
				default:
					t.Fatalf("round %d: client %d: want conflict, got %v", round, i, err)
				}
			}
			if winner < 0 {
				t.Fatalf("round %d: nobody won", round)
			}
			var err error
			if current, err = c.Client.CoordinationV1().Leases(ns).Get(ctx, "race", metav1.GetOptions{}); err != nil {
				t.Fatalf("round %d: reading lease: %v", round, err)
			}
			if got, want := *current.Spec.HolderIdentity, fmt.Sprintf("client-%d", winner); got != want {
				t.Fatalf("round %d: holder %q, want winner %q", round, got, want)
			}
		}
	})
}

func TestPodDisruptionBudgets(t *testing.T) {
	c, ctx := cluster(t), testContext(t)
	ns := namespace(t, c.Client, "pdb")
	node := "pdb-node"
	runKubelet(t, c.Client, node)
	labels := map[string]string{"app": "web"}
	for _, name := range []string{"web-0", "web-1"} {
		if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod(ns, name, node, "", labels), metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating pod %s: %v", name, err)
		}
	}
	waitFor(t, 20*time.Second, "both pods Running and Ready", func() (bool, error) {
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range pods.Items {
			if podRunningReady(&pods.Items[i]) {
				ready++
			}
		}
		return ready == 2, fmt.Errorf("%d of 2 ready", ready)
	})
	pdbs := c.Client.PolicyV1().PodDisruptionBudgets(ns)
	minAvailable := intstr.FromInt32(2)
	if _, err := pdbs.Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: &minAvailable,
			Selector:     &metav1.LabelSelector{MatchLabels: labels},
		},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating PDB: %v", err)
	}
	waitPDB := func(allowed int32) {
		t.Helper()
		waitFor(t, 30*time.Second, fmt.Sprintf("PDB status with %d disruptions allowed", allowed), func() (bool, error) {
			p, err := pdbs.Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			s := p.Status
			return s.ObservedGeneration == p.Generation && s.CurrentHealthy == 2 && s.DisruptionsAllowed == allowed,
				fmt.Errorf("status %+v, generation %d", s, p.Generation)
		})
	}

	t.Run("an eviction over budget is refused with 429", func(t *testing.T) {
		waitPDB(0)
		code, err := evict(t, c.Client, ns, "web-0")
		if code != 429 || !apierrors.IsTooManyRequests(err) {
			t.Fatalf("eviction: HTTP %d, %v; want 429", code, err)
		}
	})

	t.Run("an eviction within budget returns 201 and the pod goes", func(t *testing.T) {
		patch := []byte(`{"spec":{"minAvailable":1}}`)
		if _, err := pdbs.Patch(ctx, "web", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatalf("relaxing PDB: %v", err)
		}
		waitPDB(1)
		code, err := evict(t, c.Client, ns, "web-0")
		if code != 201 || err != nil {
			t.Fatalf("eviction: HTTP %d, %v; want 201", code, err)
		}
		waitFor(t, 10*time.Second, "the evicted pod to be gone", func() (bool, error) {
			_, err := c.Client.CoreV1().Pods(ns).Get(ctx, "web-0", metav1.GetOptions{})
			return apierrors.IsNotFound(err), err
		})
	})
}

// evict posts an Eviction and returns the HTTP status code with the error.
func evict(t *testing.T, client kubernetes.Interface, ns, name string) (int, error) {
	t.Helper()
	var code int
	res := client.CoreV1().RESTClient().Post().Namespace(ns).Resource("pods").Name(name).SubResource("eviction").
		Body(&policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}).Do(testContext(t))
	res.StatusCode(&code)
	return code, res.Error()
}

func TestNodeBoundTokens(t *testing.T) {
	c, ctx := cluster(t), testContext(t)
	ns := namespace(t, c.Client, "token")
	node := "token-node"
	serviceAccount(t, c.Client, ns, "agent")
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating node: %v", err)
	}
	t.Cleanup(func() { _ = c.Client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}) })
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod(ns, "agent", node, "agent", nil), metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating pod: %v", err)
	}
	token, err := c.NodeBoundToken(ctx, ns, "agent", "agent", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	agent, err := kubernetes.NewForConfig(c.ConfigForToken(token))
	if err != nil {
		t.Fatalf("creating agent client: %v", err)
	}

	t.Run("the API server sees the node name in the token's user extra", func(t *testing.T) {
		review, err := agent.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectReview: %v", err)
		}
		u := review.Status.UserInfo
		if want := "system:serviceaccount:" + ns + ":agent"; u.Username != want {
			t.Errorf("username %q, want %q", u.Username, want)
		}
		if got := u.Extra[kube.NodeNameExtra]; len(got) != 1 || got[0] != node {
			t.Errorf("extra %s = %v, want [%s] (all extra: %v)", kube.NodeNameExtra, got, node, u.Extra)
		}
	})

	t.Run("the audit log attributes the token's writes to its node", func(t *testing.T) {
		waitFor(t, 10*time.Second, "a write by "+node+" in the audit log", func() (bool, error) {
			events, err := c.AuditEvents()
			if err != nil {
				return false, err
			}
			for _, e := range events {
				if e.IsWrite() && e.NodeName() == node && e.ObjectRef != nil && e.ObjectRef.Resource == "selfsubjectreviews" {
					return true, nil
				}
			}
			return false, fmt.Errorf("none among %d events", len(events))
		})
	})
}

func TestAPIServerRestart(t *testing.T) {
	t.Run("data survives an API server restart on the same port", func(t *testing.T) {
		c, ctx := cluster(t), testContext(t)
		ns := namespace(t, c.Client, "restart")
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kept"}, Data: map[string]string{"k": "v"}}
		if _, err := c.Client.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating configmap: %v", err)
		}
		stopping := time.Now()
		if err := c.StopAPIServer(); err != nil {
			t.Fatal(err)
		}
		t.Logf("API server stopped in %v", time.Since(stopping))
		if _, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "kept", metav1.GetOptions{}); err == nil {
			t.Fatal("the API server still answers after StopAPIServer")
		}
		began := time.Now()
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("API server restarted in %v", time.Since(began))
		got, err := c.Client.CoreV1().ConfigMaps(ns).Get(ctx, "kept", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("reading configmap after restart: %v", err)
		}
		if got.Data["k"] != "v" {
			t.Fatalf("configmap data %v after restart", got.Data)
		}
		if !strings.HasPrefix(c.AdminConfig.Host, "https://127.0.0.1:") {
			t.Errorf("API server host %q is not on 127.0.0.1", c.AdminConfig.Host)
		}
	})
}

func TestKubeconfig(t *testing.T) {
	t.Run("the admin kubeconfig file reaches the API server", func(t *testing.T) {
		c := cluster(t)
		cfg, err := clientcmd.BuildConfigFromFlags("", c.KubeconfigPath)
		if err != nil {
			t.Fatalf("loading kubeconfig: %v", err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().Get(testContext(t), "default", metav1.GetOptions{}); err != nil {
			t.Fatalf("reading namespace default through the kubeconfig: %v", err)
		}
	})
}
