package coord

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"
	coordv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
)

// maxConflictRetries bounds the get-modify-write loops of Renew and Release.
const maxConflictRetries = 5

// Expired reports whether l was not renewed within its leaseDurationSeconds at now. A Lease
// without a renew time or duration is expired.
func Expired(l *coordv1.Lease, now time.Time) bool {
	if l.Spec.LeaseDurationSeconds == nil {
		return true
	}
	last := l.Spec.RenewTime
	if last == nil {
		last = l.Spec.AcquireTime
	}
	if last == nil {
		return true
	}
	return !now.Before(last.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second))
}

// takeable reports whether another node may take l: it is not held, or it expired and its
// holder's Node is gone, or is Ready with state Done (it finished and failed to release). A
// holder that is NotReady or mid-update (Working, Degraded) keeps its slot.
func (s *Slots) takeable(ctx context.Context, l *coordv1.Lease, log *zap.Logger) (bool, error) {
	holder := holderOf(l)
	if holder == "" {
		return true, nil
	}
	if !Expired(l, s.clock.Now()) {
		return false, nil
	}
	n, err := s.client.CoreV1().Nodes().Get(ctx, holder, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		log.Info("expired reboot slot: holder node is gone", zap.String("slot", l.Name), zap.String("holder", holder))
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading holder node %s of %s: %w", holder, l.Name, err)
	}
	st := nodestatus.Read(n)
	if Ready(n) && st.State == nodestatus.StateDone {
		log.Info("expired reboot slot: holder is Ready and Done", zap.String("slot", l.Name), zap.String("holder", holder))
		return true, nil
	}
	log.Info("expired reboot slot kept by its holder", zap.String("slot", l.Name), zap.String("holder", holder),
		zap.Bool("ready", Ready(n)), zap.String("state", string(st.State)), zap.String("phase", string(st.Phase)))
	return false, nil
}

// Ready reports whether node's Ready condition is True.
func Ready(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// Renew moves the renew time of slot to now. It returns ErrSlotLost when the Lease is gone or
// held by another node.
func (s *Slots) Renew(ctx context.Context, slot Slot) (Slot, error) {
	leases := s.client.CoordinationV1().Leases(s.namespace)
	for attempt := 0; ; attempt++ {
		l, err := leases.Get(ctx, slot.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return Slot{}, fmt.Errorf("renewing %s: %w: the lease is gone", slot.Name, ErrSlotLost)
		}
		if err != nil {
			return Slot{}, fmt.Errorf("renewing %s: %w", slot.Name, err)
		}
		if h := holderOf(l); h != slot.Holder {
			return Slot{}, fmt.Errorf("renewing %s: %w: held by %q", slot.Name, ErrSlotLost, h)
		}
		now := metav1.NewMicroTime(s.clock.Now())
		l.Spec.RenewTime = &now
		l.Spec.LeaseDurationSeconds = ptr(int32(s.duration / time.Second))
		updated, err := leases.Update(ctx, l, metav1.UpdateOptions{})
		if err == nil {
			return slotOf(updated), nil
		}
		if !apierrors.IsConflict(err) || attempt >= maxConflictRetries {
			return Slot{}, fmt.Errorf("renewing %s: %w", slot.Name, err)
		}
	}
}

// Keep renews slot every third of the lease duration until ctx ends (nil) or the slot is lost
// (ErrSlotLost). A failed renewal is logged and retried after a sixth of the duration.
func (s *Slots) Keep(ctx context.Context, slot Slot) error {
	log := s.log.With(zap.String("node", slot.Holder), zap.String("slot", slot.Name))
	wait := s.duration / 3
	for {
		t := s.clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
		_, err := s.Renew(ctx, slot)
		switch {
		case err == nil:
			wait = s.duration / 3
		case errors.Is(err, ErrSlotLost):
			log.Warn("reboot slot lost", zap.Error(err))
			return err
		case ctx.Err() != nil:
			return nil
		default:
			log.Warn("renewing reboot slot failed", zap.Error(err))
			wait = s.duration / 6
		}
	}
}

// Release deletes slot's Lease if slot.Holder still holds it, with a precondition on the UID and
// resourceVersion it read. A Lease already gone or held by another node is left alone.
func (s *Slots) Release(ctx context.Context, slot Slot) error {
	leases := s.client.CoordinationV1().Leases(s.namespace)
	for attempt := 0; ; attempt++ {
		l, err := leases.Get(ctx, slot.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("releasing %s: %w", slot.Name, err)
		}
		if h := holderOf(l); h != slot.Holder {
			s.log.Info("not releasing a reboot slot held by another node", zap.String("slot", slot.Name),
				zap.String("node", slot.Holder), zap.String("holder", h))
			return nil
		}
		uid, rv := l.UID, l.ResourceVersion
		err = leases.Delete(ctx, slot.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid, ResourceVersion: &rv}})
		if err == nil || apierrors.IsNotFound(err) {
			s.log.Info("reboot slot released", zap.String("slot", slot.Name), zap.String("node", slot.Holder))
			return nil
		}
		if !apierrors.IsConflict(err) || attempt >= maxConflictRetries {
			return fmt.Errorf("releasing %s: %w", slot.Name, err)
		}
	}
}

// MaxUnavailable returns the number of slots of pool from the layerd-config ConfigMap (default
// DefaultMaxUnavailable). A percentage counts the pool's Nodes with a label-selector list.
func (s *Slots) MaxUnavailable(ctx context.Context, pool string) (int, error) {
	cfg, err := s.Config(ctx)
	if err != nil {
		return 0, err
	}
	p := cfg.Pool(pool)
	if p.Err != nil {
		return 0, p.Err
	}
	size := 0
	if p.IsPercent() {
		if size, err = s.PoolSize(ctx, pool); err != nil {
			return 0, err
		}
	}
	n, err := p.Slots(size)
	if err != nil {
		return 0, fmt.Errorf("pool %s: %w", pool, err)
	}
	return n, nil
}

// Config reads and parses the layerd-config ConfigMap; a missing one is the empty Config.
func (s *Slots) Config(ctx context.Context) (Config, error) {
	cm, err := s.client.CoreV1().ConfigMaps(s.namespace).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return ParseConfig(nil)
	}
	if err != nil {
		return Config{}, fmt.Errorf("reading configmap %s/%s: %w", s.namespace, ConfigMapName, err)
	}
	cfg, err := ParseConfig(cm)
	if err != nil {
		return Config{}, err
	}
	unknown, unsupported := cfg.Unknown(), cfg.Unsupported()
	key := strings.Join(unknown, ",") + "|" + strings.Join(unsupported, ",")
	s.mu.Lock()
	changed := key != s.warned
	s.warned = key
	s.mu.Unlock()
	if changed && len(unknown) > 0 {
		s.log.Warn("unknown pool policy fields", zap.Strings("fields", unknown))
	}
	if changed && len(unsupported) > 0 {
		s.log.Warn("pool policy fields not enforced by this version are ignored", zap.Strings("fields", unsupported))
	}
	return cfg, nil
}

// NodePolicy reads node (one GET) and returns its pool (nodestatus.PoolOf: the label
// layerd.dev/pool, default "default") and that pool's policy from the layerd-config ConfigMap,
// as they are now. The drain reads its per-pool settings through it at every drain.
func (s *Slots) NodePolicy(ctx context.Context, node string) (string, PoolPolicy, error) {
	n, err := s.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return "", PoolPolicy{}, fmt.Errorf("reading node %s for its pool: %w", node, err)
	}
	pool := nodestatus.PoolOf(n)
	cfg, err := s.Config(ctx)
	if err != nil {
		return pool, PoolPolicy{}, fmt.Errorf("reading the policy of pool %s: %w", pool, err)
	}
	return pool, cfg.Pool(pool), nil
}

// PoolSize counts the Nodes of pool with label-selector lists (the default pool also holds
// Nodes without the label or with an empty one). Lists are served from the watch cache.
func (s *Slots) PoolSize(ctx context.Context, pool string) (int, error) {
	selectors := []string{nodestatus.LabelPool + "=" + pool}
	if pool == nodestatus.DefaultPool {
		selectors = append(selectors, "!"+nodestatus.LabelPool, nodestatus.LabelPool+"=")
	}
	n := 0
	for _, sel := range selectors {
		list, err := s.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: sel, ResourceVersion: "0"})
		if err != nil {
			return 0, fmt.Errorf("counting nodes of pool %s (%s): %w", pool, sel, err)
		}
		n += len(list.Items)
	}
	return n, nil
}

func isConflict(err error) bool { return apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) }
