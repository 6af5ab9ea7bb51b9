// Package coord hands out reboot slots: coordination.k8s.io/v1 Leases named
// layerd-slot-<pool>-<i> (i in 0..maxUnavailable-1) in the agent namespace, held by a node name.
// Only optimistic concurrency (create, update with resourceVersion, delete with preconditions)
// decides who holds a slot; there is no controller. See docs/protocol.md.
package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Labels on every slot Lease (the Lease name is not parsed back).
const (
	LabelSlotPool  = "layerd.dev/slot-pool"
	LabelSlotIndex = "layerd.dev/slot-index"
)

// DefaultLeaseDuration is the leaseDurationSeconds of a slot; it is renewed every third of it.
const DefaultLeaseDuration = 300 * time.Second

// MinLeaseDuration is the shortest leaseDurationSeconds WithLeaseDuration accepts.
const MinLeaseDuration = 3 * time.Second

// ErrBusy matches (errors.Is) a *BusyError.
var ErrBusy = errors.New("all reboot slots are held")

// ErrSlotLost is returned by Renew and Keep when the Lease is gone or held by another node.
var ErrSlotLost = errors.New("reboot slot lost")

// BusyError says every slot of a pool is held, and by whom.
type BusyError struct {
	Pool    string
	Slots   int
	Holders []string
}

func (e *BusyError) Error() string {
	msg := fmt.Sprintf("all %d reboot slot(s) of pool %s are held", e.Slots, e.Pool)
	if len(e.Holders) > 0 {
		msg += " by " + strings.Join(e.Holders, ", ")
	}
	return msg
}

// Is makes errors.Is(err, ErrBusy) true.
func (e *BusyError) Is(target error) bool { return target == ErrBusy }

// Slot is a held reboot slot.
type Slot struct {
	Name        string
	Pool        string
	Index       int
	Holder      string
	AcquireTime time.Time
	RenewTime   time.Time
}

// Slots is the one owner of the slot Leases and the pool policy ConfigMap.
type Slots struct {
	client    kubernetes.Interface
	namespace string
	clock     clock.Clock
	log       *zap.Logger
	duration  time.Duration

	mu     sync.Mutex
	warned string // the policy warnings last logged, so each is logged once per change
}

// Option configures Slots.
type Option func(*Slots)

// WithLeaseDuration sets leaseDurationSeconds (whole seconds, default DefaultLeaseDuration).
func WithLeaseDuration(d time.Duration) Option { return func(s *Slots) { s.duration = d } }

// New returns the slot owner for Leases in namespace. It does no I/O.
func New(client kubernetes.Interface, namespace string, clk clock.Clock, log *zap.Logger, opts ...Option) (*Slots, error) {
	switch {
	case client == nil:
		return nil, errors.New("coord: nil kubernetes client")
	case namespace == "":
		return nil, errors.New("coord: empty namespace")
	case clk == nil:
		return nil, errors.New("coord: nil clock")
	case log == nil:
		return nil, errors.New("coord: nil logger")
	}
	s := &Slots{client: client, namespace: namespace, clock: clk, log: log, duration: DefaultLeaseDuration}
	for _, o := range opts {
		o(s)
	}
	if s.duration < MinLeaseDuration || s.duration%time.Second != 0 {
		return nil, fmt.Errorf("coord: lease duration %s must be whole seconds, at least %s", s.duration, MinLeaseDuration)
	}
	return s, nil
}

// LeaseName is the name of slot i of pool.
func LeaseName(pool string, i int) string { return fmt.Sprintf("layerd-slot-%s-%d", pool, i) }

// Acquire takes a reboot slot of pool for node, or returns the one node already holds (renewed).
// Slots are tried from index 0: a missing Lease is created, a free or takeover-able one is updated
// with its resourceVersion; losing a race (409) moves on to the next slot. When none can be taken
// it returns a *BusyError naming the holders.
func (s *Slots) Acquire(ctx context.Context, node, pool string) (Slot, error) {
	if node == "" {
		return Slot{}, errors.New("acquiring a reboot slot: empty node name")
	}
	if err := ValidatePoolName(pool); err != nil {
		return Slot{}, fmt.Errorf("acquiring a reboot slot: %w", err)
	}
	log := s.log.With(zap.String("node", node), zap.String("pool", pool))
	max, err := s.MaxUnavailable(ctx, pool)
	if err != nil {
		return Slot{}, fmt.Errorf("acquiring a reboot slot of pool %s: %w", pool, err)
	}
	leases, err := s.poolLeases(ctx, pool)
	if err != nil {
		return Slot{}, fmt.Errorf("acquiring a reboot slot of pool %s: %w", pool, err)
	}
	for _, l := range leases {
		if holderOf(l) == node {
			log.Info("reboot slot already held", zap.String("slot", l.Name))
			return s.Renew(ctx, slotOf(l))
		}
	}
	// Held slots beyond maxUnavailable (it was lowered) still count: they shrink the range.
	byIndex := map[int]*coordv1.Lease{}
	var holders []string
	usable := max
	for _, l := range leases {
		i, ok := indexOf(l)
		if !ok {
			continue
		}
		if i < max {
			byIndex[i] = l
			continue
		}
		if holderOf(l) == "" {
			continue
		}
		if free, err := s.takeable(ctx, l, log); err != nil {
			return Slot{}, fmt.Errorf("acquiring a reboot slot of pool %s: %w", pool, err)
		} else if !free {
			usable--
			holders = append(holders, holderOf(l))
		}
	}
	for i := 0; i < usable; i++ {
		slot, holder, err := s.tryIndex(ctx, node, pool, i, byIndex[i], log)
		if err != nil {
			return Slot{}, fmt.Errorf("acquiring reboot slot %s: %w", LeaseName(pool, i), err)
		}
		if slot != nil {
			log.Info("reboot slot acquired", zap.String("slot", slot.Name))
			return *slot, nil
		}
		if holder != "" {
			holders = append(holders, holder)
		}
	}
	slices.Sort(holders)
	return Slot{}, &BusyError{Pool: pool, Slots: max, Holders: slices.Compact(holders)}
}

// tryIndex tries slot i once: it returns the Slot when node got it, else the current holder.
func (s *Slots) tryIndex(ctx context.Context, node, pool string, i int, l *coordv1.Lease, log *zap.Logger) (*Slot, string, error) {
	name := LeaseName(pool, i)
	leases := s.client.CoordinationV1().Leases(s.namespace)
	if l == nil {
		created, err := leases.Create(ctx, s.newLease(node, pool, i), metav1.CreateOptions{})
		if err == nil {
			slot := slotOf(created)
			return &slot, "", nil
		}
		if !isConflict(err) {
			return nil, "", fmt.Errorf("creating lease: %w", err)
		}
		log.Debug("lost the race for a new reboot slot", zap.String("slot", name))
		return nil, s.currentHolder(ctx, name), nil
	}
	if h := holderOf(l); h != "" {
		ok, err := s.takeable(ctx, l, log)
		if err != nil {
			return nil, "", err
		}
		if !ok {
			return nil, h, nil
		}
		log.Info("taking over an expired reboot slot", zap.String("slot", name), zap.String("holder", h))
	}
	next := l.DeepCopy()
	s.hold(next, node, pool, i)
	if h := holderOf(l); h != "" && h != node {
		next.Spec.LeaseTransitions = ptr(derefInt32(l.Spec.LeaseTransitions) + 1)
	}
	updated, err := leases.Update(ctx, next, metav1.UpdateOptions{})
	if err == nil {
		slot := slotOf(updated)
		return &slot, "", nil
	}
	if !isConflict(err) {
		return nil, "", fmt.Errorf("updating lease: %w", err)
	}
	log.Debug("lost the race for a reboot slot", zap.String("slot", name))
	return nil, s.currentHolder(ctx, name), nil
}

// currentHolder names the winner of a lost race for the BusyError ("" when unknown).
func (s *Slots) currentHolder(ctx context.Context, name string) string {
	l, err := s.client.CoordinationV1().Leases(s.namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		s.log.Debug("reading the winner of a reboot slot", zap.String("slot", name), zap.Error(err))
		return ""
	}
	return holderOf(l)
}

// Held returns the slot node holds in any pool (after a restart), with ok false when none.
func (s *Slots) Held(ctx context.Context, node string) (Slot, bool, error) {
	list, err := s.client.CoordinationV1().Leases(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSlotPool})
	if err != nil {
		return Slot{}, false, fmt.Errorf("listing reboot slots held by %s: %w", node, err)
	}
	var held []Slot
	for i := range list.Items {
		if holderOf(&list.Items[i]) == node {
			held = append(held, slotOf(&list.Items[i]))
		}
	}
	if len(held) == 0 {
		return Slot{}, false, nil
	}
	slices.SortFunc(held, func(a, b Slot) int { return strings.Compare(a.Name, b.Name) })
	if len(held) > 1 {
		s.log.Warn("node holds more than one reboot slot", zap.String("node", node), zap.Int("count", len(held)))
	}
	return held[0], true, nil
}

func (s *Slots) poolLeases(ctx context.Context, pool string) ([]*coordv1.Lease, error) {
	list, err := s.client.CoordinationV1().Leases(s.namespace).List(ctx, metav1.ListOptions{LabelSelector: LabelSlotPool + "=" + pool})
	if err != nil {
		return nil, fmt.Errorf("listing slot leases: %w", err)
	}
	out := make([]*coordv1.Lease, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, &list.Items[i])
	}
	return out, nil
}

func (s *Slots) newLease(node, pool string, i int) *coordv1.Lease {
	l := &coordv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: LeaseName(pool, i), Namespace: s.namespace}}
	s.hold(l, node, pool, i)
	return l
}

// hold makes l held by node from now.
func (s *Slots) hold(l *coordv1.Lease, node, pool string, i int) {
	now := metav1.NewMicroTime(s.clock.Now())
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[LabelSlotPool] = pool
	l.Labels[LabelSlotIndex] = strconv.Itoa(i)
	l.Spec.HolderIdentity = &node
	l.Spec.LeaseDurationSeconds = ptr(int32(s.duration / time.Second))
	l.Spec.AcquireTime = &now
	l.Spec.RenewTime = &now
}

func slotOf(l *coordv1.Lease) Slot {
	sl := Slot{Name: l.Name, Pool: l.Labels[LabelSlotPool], Holder: holderOf(l)}
	sl.Index, _ = indexOf(l)
	if l.Spec.AcquireTime != nil {
		sl.AcquireTime = l.Spec.AcquireTime.Time
	}
	if l.Spec.RenewTime != nil {
		sl.RenewTime = l.Spec.RenewTime.Time
	}
	return sl
}

func holderOf(l *coordv1.Lease) string {
	if l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func indexOf(l *coordv1.Lease) (int, bool) {
	i, err := strconv.Atoi(l.Labels[LabelSlotIndex])
	return i, err == nil && i >= 0
}

func ptr[T any](v T) *T { return &v }

func derefInt32(p *int32) int32 {
	if p == nil {
		return 0
	}
	return *p
}
