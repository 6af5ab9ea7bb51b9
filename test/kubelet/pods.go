package kubelet

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// podWorker watches the pods bound to the node (one informer, field selector
// spec.nodeName, no resync) and reconciles each through a work queue.
type podWorker struct {
	k        *Kubelet
	factory  informers.SharedInformerFactory
	informer cache.SharedIndexInformer
	queue    workqueue.TypedRateLimitingInterface[string]

	mu          sync.Mutex
	terminating map[types.UID]time.Time // first time a deletionTimestamp was seen
}

func newPodWorker(k *Kubelet) *podWorker {
	selector := fields.OneTermEqualSelector("spec.nodeName", k.nodeName).String()
	factory := informers.NewSharedInformerFactoryWithOptions(k.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = selector }))
	w := &podWorker{
		k:        k,
		factory:  factory,
		informer: factory.Core().V1().Pods().Informer(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Clock: k.clock}),
		terminating: map[types.UID]time.Time{},
	}
	enqueue := func(obj any) {
		if key, err := cache.MetaNamespaceKeyFunc(obj); err == nil {
			w.queue.Add(key)
		}
	}
	_, _ = w.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: func(obj any) {
			if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = tomb.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				w.mu.Lock()
				delete(w.terminating, pod.UID)
				w.mu.Unlock()
			}
		},
	})
	return w
}

func (w *podWorker) run(ctx context.Context) {
	defer w.factory.Shutdown()
	defer w.queue.ShutDown()
	w.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), w.informer.HasSynced) {
		return
	}
	go func() {
		<-ctx.Done()
		w.queue.ShutDown()
	}()
	for w.next(ctx) {
	}
}

func (w *podWorker) next(ctx context.Context) bool {
	key, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(key)
	if err := w.sync(ctx, key); err != nil {
		if ctx.Err() == nil {
			w.k.opts.Logf("kubelet %s: pod %s: %v", w.k.nodeName, key, err)
		}
		w.queue.AddRateLimited(key)
		return true
	}
	w.queue.Forget(key)
	return true
}

func (w *podWorker) sync(ctx context.Context, key string) error {
	obj, exists, err := w.informer.GetIndexer().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	pod := obj.(*corev1.Pod)
	switch {
	case pod.DeletionTimestamp != nil:
		return w.finishDeletion(ctx, key, pod)
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return nil
	case pod.Status.Phase == corev1.PodRunning && podReady(pod):
		return nil
	default:
		return w.markRunning(ctx, pod)
	}
}

// finishDeletion deletes a terminating pod with grace period 0 once min(its grace period,
// MaxTerminationDelay) has passed since the stand-in saw it terminating.
func (w *podWorker) finishDeletion(ctx context.Context, key string, pod *corev1.Pod) error {
	delay := max(w.k.opts.MaxTerminationDelay, 0)
	if g := pod.DeletionGracePeriodSeconds; g != nil {
		delay = min(delay, time.Duration(*g)*time.Second)
	}
	now := w.k.clock.Now()
	w.mu.Lock()
	since, seen := w.terminating[pod.UID]
	if !seen {
		since = now
		w.terminating[pod.UID] = now
	}
	w.mu.Unlock()
	if wait := since.Add(delay).Sub(now); wait > 0 {
		w.queue.AddAfter(key, wait)
		return nil
	}
	zero, uid := int64(0), pod.UID
	err := w.k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero,
		Preconditions:      &metav1.Preconditions{UID: &uid},
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("completing deletion: %w", err)
	}
	return nil
}

// markRunning patches the pod status to Running with every pod condition True, so the
// disruption controller counts the pod healthy.
func (w *podWorker) markRunning(ctx context.Context, pod *corev1.Pod) error {
	now := rfc3339(w.k.clock.Now())
	var conds []any
	for _, t := range []corev1.PodConditionType{
		corev1.PodScheduled, corev1.PodReadyToStartContainers, corev1.PodInitialized,
		corev1.ContainersReady, corev1.PodReady,
	} {
		conds = append(conds, map[string]any{"type": string(t), "status": "True", "lastTransitionTime": now})
	}
	status := map[string]any{"phase": string(corev1.PodRunning), "conditions": conds}
	if pod.Status.StartTime == nil {
		status["startTime"] = now
	}
	patch, err := json.Marshal(map[string]any{"status": status})
	if err != nil {
		return fmt.Errorf("encoding pod status: %w", err)
	}
	_, err = w.k.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("marking running: %w", err)
	}
	return nil
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
