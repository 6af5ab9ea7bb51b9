// Package kubelet is a kubelet stand-in for one Node of the test world. It creates the Node,
// posts a Ready heartbeat carrying the current boot ID, marks Pods bound to the Node Running
// and Ready, and completes their deletion.
//
// We wrote our own instead of using kwok: kwok would be a second ~4 minute build in the
// test binary cache, and layerd's tests must control the Node's boot ID (a reboot is a new
// status.nodeInfo.bootID, reported at once), which kwok does not model.
//
// The stand-in only owns the Ready condition and status.nodeInfo.bootID: heartbeats are
// strategic-merge patches keyed by condition type, so conditions written by others (such as
// layerd's OSImageUpToDate) survive. Pods are watched through an informer restricted to
// spec.nodeName; nothing lists all pods periodically.
package kubelet

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// retryDelay bounds the wait before retrying a failed heartbeat.
const retryDelay = 500 * time.Millisecond

// Options configures a Kubelet. Zero values take the defaults.
type Options struct {
	// Heartbeat is the node status interval. Default 1s.
	Heartbeat time.Duration
	// Clock drives heartbeats, timestamps and deletion delays. Default: the real clock.
	Clock clock.WithTicker
	// Labels are added to the Node (on top of kubernetes.io/hostname, os and arch).
	Labels map[string]string
	// MaxTerminationDelay caps how long a terminating pod's grace period is honoured before
	// the stand-in deletes it with grace period 0. Default 200ms; negative means no delay.
	MaxTerminationDelay time.Duration
	// Logf receives diagnostics (failed heartbeats, pod updates). Default: discarded.
	Logf func(format string, args ...any)
}

// Kubelet is the stand-in for one Node.
type Kubelet struct {
	client   kubernetes.Interface
	nodeName string
	opts     Options
	clock    clock.WithTicker

	notReady   atomic.Bool
	heartbeats atomic.Int64
	kick       chan struct{}

	mu             sync.Mutex
	bootID         string
	lastReady      *bool
	lastTransition time.Time
}

// New returns a stand-in for nodeName. Nothing happens until Run.
func New(client kubernetes.Interface, nodeName string, opts Options) *Kubelet {
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	if opts.MaxTerminationDelay == 0 {
		opts.MaxTerminationDelay = 200 * time.Millisecond
	}
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	return &Kubelet{
		client:   client,
		nodeName: nodeName,
		opts:     opts,
		clock:    opts.Clock,
		kick:     make(chan struct{}, 1),
		bootID:   string(uuid.NewUUID()),
	}
}

// NodeName returns the name of the Node this stand-in runs.
func (k *Kubelet) NodeName() string { return k.nodeName }

// BootID returns the boot ID currently reported.
func (k *Kubelet) BootID() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.bootID
}

// NewBoot simulates a reboot: it picks a new random boot ID, returns it and reports it on an
// immediate heartbeat.
func (k *Kubelet) NewBoot() string {
	k.mu.Lock()
	k.bootID = string(uuid.NewUUID())
	id := k.bootID
	k.mu.Unlock()
	k.heartbeatNow()
	return id
}

// SetBootID reports id as the boot ID (a booted node's real boot ID, as its kernel gives it) on
// an immediate heartbeat.
func (k *Kubelet) SetBootID(id string) {
	k.mu.Lock()
	k.bootID = id
	k.mu.Unlock()
	k.heartbeatNow()
}

// SetNotReady makes heartbeats report Ready=False (reason KubeletNotReady) while true. The
// change is reported on an immediate heartbeat.
func (k *Kubelet) SetNotReady(notReady bool) {
	k.notReady.Store(notReady)
	k.heartbeatNow()
}

// Heartbeats returns how many node status heartbeats have succeeded.
func (k *Kubelet) Heartbeats() int64 { return k.heartbeats.Load() }

func (k *Kubelet) heartbeatNow() {
	select {
	case k.kick <- struct{}{}:
	default:
	}
}

// Run creates the Node if needed, then heartbeats and manages the Node's pods until ctx is
// done. It returns an error only if the Node cannot be created or read; it returns nil on
// cancellation.
func (k *Kubelet) Run(ctx context.Context) error {
	if err := k.ensureNode(ctx); err != nil {
		return fmt.Errorf("kubelet stand-in for node %s: %w", k.nodeName, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		newPodWorker(k).run(ctx)
	}()
	k.heartbeatLoop(ctx)
	cancel()
	wg.Wait()
	return nil
}

func (k *Kubelet) heartbeatLoop(ctx context.Context) {
	for {
		wait := k.opts.Heartbeat
		if err := k.heartbeat(ctx); err != nil && ctx.Err() == nil {
			k.opts.Logf("kubelet %s: heartbeat: %v", k.nodeName, err)
			wait = min(wait, retryDelay)
		}
		timer := k.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-k.kick:
			timer.Stop()
		case <-timer.C():
		}
	}
}
