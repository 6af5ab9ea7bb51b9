package daemon_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

// The images of the tests: the node boots "old"; updates go to "new" (multi-arch) or "other".
const (
	repo      = "registry.example/os"
	imgOld    = repo + ":41"
	digOld    = "sha256:0001"
	pinOld    = repo + "@" + digOld
	imgNew    = repo + ":42"
	digNew    = "sha256:0002"
	idxNew    = "sha256:0a02"
	pinNew    = repo + "@" + digNew
	imgOther  = repo + ":43"
	digOther  = "sha256:0003"
	pinOther  = repo + "@" + digOther
	bootFirst = "boot-1"
	txnPath   = "unix:path=/run/rpm-ostree/txn-1"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

var targets = map[string]daemon.Target{
	imgOld:   {Image: imgOld, Repo: repo, Pinned: pinOld, Digest: digOld},
	imgNew:   {Image: imgNew, Repo: repo, Pinned: pinNew, Digest: digNew, IndexDigest: idxNew},
	imgOther: {Image: imgOther, Repo: repo, Pinned: pinOther, Digest: digOther},
}

func config() daemon.Config {
	return daemon.DefaultConfig(func() float64 { return 0.5 })
}

func newMachine(t *testing.T) *daemon.Machine {
	t.Helper()
	m, err := daemon.New(config())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// atRest is a node booted into old, Done, Ready and schedulable.
func atRest() daemon.Observed {
	return daemon.Observed{
		Now: t0,
		Node: daemon.NodeView{
			Status: nodestatus.Status{DesiredImage: imgOld, ResolvedImage: imgOld, DesiredDigest: digOld,
				State: nodestatus.StateDone, CurrentImage: pinOld, Message: "Running " + pinOld, Pool: nodestatus.DefaultPool},
			Ready: true, ReadySince: t0.Add(-time.Hour), BootID: bootFirst,
		},
		Host: daemon.HostView{BootedDigest: digOld, BootedImage: pinOld},
	}
}

// describe renders effects tersely: Reports by state and phase or reason, others by their key.
func describe(effects []daemon.Effect) string {
	var out []string
	for _, e := range effects {
		switch e := e.(type) {
		case daemon.Report:
			s := string(e.State)
			if e.Phase != "" {
				s += "/" + string(e.Phase)
			}
			if e.Reason != "" {
				s += "/" + string(e.Reason)
			}
			out = append(out, "Report("+s+")")
		case daemon.Resolve:
			out = append(out, "Resolve("+e.Ref()+")")
		case daemon.Verify:
			out = append(out, "Verify("+e.Target.Pinned+")")
		case daemon.Validate:
			out = append(out, "Validate("+e.Target.Pinned+")")
		case daemon.Stage:
			out = append(out, fmt.Sprintf("Stage(%s,lock=%t)", e.Pinned, e.LockFinalization))
		case daemon.AttachTxn:
			out = append(out, "AttachTxn("+e.Path+")")
		case daemon.CancelTxn:
			out = append(out, "CancelTxn("+e.Path+")")
		case daemon.Interrupt:
			out = append(out, "Interrupt("+e.Effect+")")
		case daemon.RecordDigest:
			out = append(out, "RecordDigest("+e.Target.Digest+")")
		case daemon.AckRetry:
			out = append(out, "AckRetry("+e.Value+")")
		case daemon.AcquireSlot:
			out = append(out, "AcquireSlot("+e.Pool+")")
		case daemon.RecordBootID:
			out = append(out, "RecordBootID("+e.BootID+")")
		case daemon.Finalize:
			out = append(out, "Finalize("+e.Digest+")")
		case daemon.PreviewHost:
			out = append(out, "PreviewHost("+e.Digest+")")
		case daemon.ApplyEtcPolicy:
			out = append(out, "ApplyEtcPolicy("+e.Digest+")")
		case daemon.RestoreEtc:
			out = append(out, "RestoreEtc("+e.Digest+")")
		case daemon.CreateMissingVar:
			out = append(out, "CreateMissingVar("+e.Digest+")")
		case daemon.Warn:
			out = append(out, "Warn("+string(e.Code)+")")
		default:
			out = append(out, e.Name())
		}
	}
	return strings.Join(out, " ")
}

// world is a pure simulation of the owners: it applies effects to an Observed the way the real
// owners would change what the agent observes next. No I/O.
type world struct {
	t     *testing.T
	m     *daemon.Machine
	state daemon.State
	obs   daemon.Observed

	byDigest map[string]daemon.Target
	images   map[string]daemon.Target
	// fail makes the named effect fail with this outcome until deleted.
	fail map[string]daemon.Outcome
	// busy holds every slot of the pool while non-empty.
	busy []string
	// crashAt kills the agent after that many applied effects (0: never).
	crashAt int
	// stageCrashes: the next Stage starts a transaction that keeps running in rpm-ostreed while
	// the agent dies (killed mid-transaction).
	stageCrashes bool
	// txn is the image the transaction running in rpm-ostreed stages ("" when none).
	txn string
	// wrongBoot: the next reboot boots the old deployment (finalize failed at shutdown).
	wrongBoot bool
	// preview is what PreviewHost finds; created is what CreateMissingVar reports.
	preview, created daemon.HostFSSummary
	// etcLocal is false while the admin's /etc edits are set aside by ImageWins (applied and
	// not restored); backedUp lists the digests whose backup holds them after the boot.
	etcLocal bool
	backedUp []string
	warnings []string // Warn effects as Code: Message

	applied  int
	effects  []string // every effect applied, described
	phases   []daemon.Phase
	reported []string // every state/phase transition reported
	reboots  int
	pulls    int // Stage effects that ran a transaction
	repulls  int // Stage effects while the staged deployment already matched
	crashed  bool
	bootN    int
}

func newWorld(t *testing.T, obs daemon.Observed) *world {
	w := &world{t: t, m: newMachine(t), obs: obs, byDigest: map[string]daemon.Target{}, images: map[string]daemon.Target{},
		fail: map[string]daemon.Outcome{}, bootN: 1, etcLocal: true}
	for img, tg := range targets {
		w.images[img] = tg
		w.byDigest[tg.Digest] = tg
		if tg.IndexDigest != "" {
			w.byDigest[tg.IndexDigest] = tg
		}
	}
	return w
}

// desire sets desired-image as the admin does.
func (w *world) desire(img string) { w.obs.Node.Status.DesiredImage = img }

// step runs one Step and executes its effects; it reports whether the decision was to wait.
func (w *world) step() (daemon.Decision, bool) {
	w.t.Helper()
	d := w.m.Step(w.state, w.obs)
	if d.Err != nil {
		w.t.Fatalf("step from %+v: %v", w.state, d.Err)
	}
	w.state = d.Next
	if n := len(w.phases); n == 0 || w.phases[n-1] != d.Next.Phase {
		w.phases = append(w.phases, d.Next.Phase)
	}
	w.obs.Last = daemon.Outcome{}
	if len(d.Effects) == 0 {
		return d, true
	}
	w.execute(d.Effects)
	return d, false
}

func (w *world) execute(effects []daemon.Effect) {
	for _, e := range effects {
		out := w.apply(e)
		w.applied++
		if w.crashed || (w.crashAt > 0 && w.applied == w.crashAt) {
			w.crash()
			return
		}
		w.obs.Last = out
		if out.Failed() {
			return
		}
	}
}

// crash kills the agent: its in-memory state and the outcome in hand are lost.
func (w *world) crash() {
	w.state = daemon.State{}
	w.obs.Last = daemon.Outcome{}
	w.crashed = false
}

// runUntil steps until done(w) holds after a step, waiting out RetryAfter on the world's clock.
func (w *world) runUntil(done func(*world) bool) {
	w.t.Helper()
	for i := 0; i < 300; i++ {
		d, waiting := w.step()
		if done(w) {
			return
		}
		if waiting {
			if d.RetryAfter == 0 {
				w.t.Fatalf("quiescent in %s before the condition held; last effects: %s", w.state.Phase, w.tail())
			}
			w.obs.Now = w.obs.Now.Add(d.RetryAfter)
		}
	}
	w.t.Fatalf("no convergence after 300 steps in %s; last effects: %s", w.state.Phase, w.tail())
}

// run steps until the machine waits without a deadline.
func (w *world) run() {
	w.t.Helper()
	quiet := false
	for i := 0; i < 300; i++ {
		d, waiting := w.step()
		if waiting && d.RetryAfter == 0 {
			quiet = true
			break
		}
		if waiting {
			w.obs.Now = w.obs.Now.Add(d.RetryAfter)
		}
	}
	if !quiet {
		w.t.Fatalf("no convergence after 300 steps in %s; last effects: %s", w.state.Phase, w.tail())
	}
}

// tail is the last effects applied, for failure messages.
func (w *world) tail() string {
	return strings.Join(w.effects[max(0, len(w.effects)-30):], " ")
}

func inPhase(p daemon.Phase) func(*world) bool {
	return func(w *world) bool { return w.state.Phase == p }
}

func (w *world) failing(effect string, code reason.Code) {
	w.fail[effect] = daemon.Outcome{Effect: effect, Err: effect + " failed: " + string(code), Code: code}
}
