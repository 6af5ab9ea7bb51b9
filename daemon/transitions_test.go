package daemon_test

import (
	"bufio"
	"errors"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"layerd.dev/layerd/daemon"
	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

var (
	edgeRE  = regexp.MustCompile(`^\s*(\w+)\s*-->\s*(\w+)\s*(:.*)?$`)
	stateRE = regexp.MustCompile(`^\s*state\s+"[^"]*"\s+as\s+(\w+)\s*$`)
)

// diagram parses the mermaid stateDiagram-v2 block of docs/fsm.md into its edges and states.
func diagram(t *testing.T) (map[daemon.Phase][]daemon.Phase, map[daemon.Phase]bool) {
	t.Helper()
	f, err := os.Open("../docs/fsm.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	edges, states := map[daemon.Phase][]daemon.Phase{}, map[daemon.Phase]bool{}
	in, found := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "```mermaid":
			in = true
		case in && strings.TrimSpace(line) == "```":
			in = false
		case in && strings.TrimSpace(line) == "stateDiagram-v2":
			found = true
		case in:
			if m := edgeRE.FindStringSubmatch(line); m != nil {
				from, to := daemon.Phase(m[1]), daemon.Phase(m[2])
				edges[from] = append(edges[from], to)
				states[from], states[to] = true, true
			} else if m := stateRE.FindStringSubmatch(line); m != nil {
				states[daemon.Phase(m[1])] = true
			} else if strings.TrimSpace(line) != "" {
				t.Errorf("docs/fsm.md: diagram line not understood: %q", line)
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("docs/fsm.md has no mermaid stateDiagram-v2 block")
	}
	return edges, states
}

func TestDiagramMatchesTransitions(t *testing.T) {
	edges, states := diagram(t)
	t.Run("every_edge_of_the_table_is_drawn_and_nothing_else", func(t *testing.T) {
		for _, from := range daemon.Phases() {
			want := slices.Sorted(slices.Values(daemon.Transitions[from]))
			got := slices.Sorted(slices.Values(edges[from]))
			if !slices.Equal(want, got) {
				t.Errorf("%s: Transitions says %v, docs/fsm.md draws %v", from, want, got)
			}
		}
		for from := range edges {
			if _, ok := daemon.Transitions[from]; !ok {
				t.Errorf("docs/fsm.md draws edges from %s, which is not a phase", from)
			}
		}
	})
	t.Run("every_phase_is_drawn_and_has_a_row", func(t *testing.T) {
		for _, p := range daemon.Phases() {
			if !states[p] {
				t.Errorf("docs/fsm.md does not draw %s", p)
			}
			if _, ok := daemon.Transitions[p]; !ok {
				t.Errorf("Transitions has no row for %s", p)
			}
		}
		if len(daemon.Transitions) != len(daemon.Phases()) {
			t.Errorf("Transitions has %d rows, there are %d phases", len(daemon.Transitions), len(daemon.Phases()))
		}
	})
}

func TestCheckTransition(t *testing.T) {
	t.Run("rejects_edges_not_in_the_table", func(t *testing.T) {
		for _, c := range [][2]daemon.Phase{
			{daemon.PhaseIdle, daemon.PhaseRebooting},
			{daemon.PhaseResolving, daemon.PhaseDraining},
			{daemon.PhaseStaged, daemon.PhaseDone},
			{daemon.PhaseWaitingForSlot, daemon.PhaseRebooting},
			{daemon.PhaseRebooting, daemon.PhaseResolving},
			{daemon.PhaseConfirming, daemon.PhaseIdle},
			{daemon.PhaseDegraded, daemon.PhaseDraining},
			{daemon.PhaseRollingBack, daemon.PhaseDone},
		} {
			err := daemon.CheckTransition(c[0], c[1])
			var te *daemon.TransitionError
			if !errors.As(err, &te) || te.From != c[0] || te.To != c[1] {
				t.Errorf("%s → %s: got %v, want a *TransitionError", c[0], c[1], err)
				continue
			}
			if !strings.Contains(err.Error(), "illegal transition "+string(c[0])+" → "+string(c[1])) {
				t.Errorf("message %q does not name the edge", err)
			}
		}
	})
	t.Run("allows_every_edge_of_the_table_and_staying", func(t *testing.T) {
		for from, tos := range daemon.Transitions {
			for _, to := range append(tos, from) {
				if err := daemon.CheckTransition(from, to); err != nil {
					t.Errorf("%s → %s: %v", from, to, err)
				}
			}
		}
	})
	t.Run("rejects_an_unknown_phase", func(t *testing.T) {
		if err := daemon.CheckTransition("Bogus", "Bogus"); err == nil {
			t.Error("staying in an unknown phase was allowed")
		}
	})
}

func TestStepRejectsWhatItCannotHandle(t *testing.T) {
	m := newMachine(t)
	for _, p := range []daemon.Phase{"Bogus", daemon.PhaseRollingBack} {
		t.Run("phase_"+string(p), func(t *testing.T) {
			cur := daemon.State{Phase: p, Target: targets[imgNew]}
			d := m.Step(cur, atRest())
			if d.Err == nil || len(d.Effects) != 0 || d.Next.Phase != p {
				t.Errorf("got %+v, want an error, no effects and the state unchanged", d)
			}
		})
	}
}

// TestStepNeverLeavesTheTable steps every phase over a grid of observations: every decision is
// a legal transition, and the safety rules hold in all of them.
func TestStepNeverLeavesTheTable(t *testing.T) {
	m := newMachine(t)
	outcomes := []daemon.Outcome{{}}
	for _, name := range []string{"Resolve", "Verify", "Validate", "Stage", "AttachTxn", "CancelTxn", "AcquireSlot",
		"Cordon", "Drain", "CheckInhibitors", "RecordBootID", "Finalize", "Report", "PreviewHost", "ApplyEtcPolicy",
		"RestoreEtc", "CreateMissingVar", "Warn"} {
		tg := targets[imgNew]
		outcomes = append(outcomes,
			daemon.Outcome{Effect: name, Target: &tg, Size: 1},
			daemon.Outcome{Effect: name, Err: "failed", Code: reason.DrainTimeout},
			daemon.Outcome{Effect: name, Err: "failed", Code: reason.SignatureRejected},
			daemon.Outcome{Effect: name, Err: "apiserver down"},
			daemon.Outcome{Effect: name, Err: "context canceled", Interrupted: true})
	}
	outcomes = append(outcomes, daemon.Outcome{Effect: "AcquireSlot", Busy: true, Holders: []string{"b"}},
		daemon.Outcome{Effect: "PreviewHost", HostFS: &conflicts},
		daemon.Outcome{Effect: "CreateMissingVar", HostFS: &daemon.HostFSSummary{VarCreated: 1, VarNotApplied: 1}})
	n := 0
	for _, p := range daemon.Phases() {
		if p == daemon.PhaseRollingBack {
			continue
		}
		for _, desired := range []string{"", imgOld, imgNew, imgOther} {
			for _, staged := range []string{"", digNew, digOther} {
				for _, bits := range []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 15, 16, 31, 32, 33, 41, 64, 65, 73, 97, 105, 127} {
					for _, last := range outcomes {
						obs := gridObs(desired, staged, bits, last)
						cur := daemon.State{Phase: p, Target: targets[imgNew], Reason: reason.PullFailed}
						d := m.Step(cur, obs)
						n++
						if d.Err != nil {
							t.Fatalf("%s, desired %q, staged %q, bits %b, last %+v: %v", p, desired, staged, bits, last, d.Err)
						}
						checkSafety(t, p, obs, d)
					}
				}
			}
		}
	}
	t.Logf("%d steps checked", n)
}

func gridObs(desired, staged string, bits int, last daemon.Outcome) daemon.Observed {
	obs := atRest()
	st := &obs.Node.Status
	st.DesiredImage = desired
	st.State, st.Phase = nodestatus.StateWorking, nodestatus.PhaseDraining
	if staged != "" {
		obs.Host.StagedDigest, obs.Host.StagedImage = staged, repo+"@"+staged
	}
	obs.SlotHeld = bits&1 != 0
	if bits&2 != 0 {
		obs.Node.Unschedulable = true
		if bits&4 != 0 {
			st.CordonedBy = nodestatus.CordonedByLayerd
		}
	}
	st.RebootBootID = bootFirst
	if bits&8 != 0 {
		obs.Node.BootID = "boot-2"
	}
	if bits&16 != 0 {
		obs.Host.ActiveTxn = txnPath
		st.Retry = "r1"
	}
	if bits&32 != 0 {
		obs.Policy = daemon.Policy{EtcImageWins: true, VarCreateMissing: true}
	}
	if bits&64 != 0 {
		obs.Host.EtcBackups = []string{digNew}
	}
	obs.Last = last
	return obs
}

func checkSafety(t *testing.T, p daemon.Phase, obs daemon.Observed, d daemon.Decision) {
	t.Helper()
	long := 0
	for _, e := range d.Effects {
		switch e := e.(type) {
		case daemon.Cordon:
			if obs.Node.Unschedulable {
				t.Errorf("%s: Cordon of a node already cordoned (maybe not by us)", p)
			}
		case daemon.Uncordon:
			if !obs.Node.Status.CordonedByUs() {
				t.Errorf("%s: Uncordon of a cordon not ours", p)
			}
		case daemon.Drain, daemon.Finalize:
			if !obs.SlotHeld {
				t.Errorf("%s: %s without the slot", p, e.Name())
			}
		case daemon.Stage:
			if obs.Host.StagedDigest == digestOf(e.Pinned) || obs.Host.ActiveTxn != "" {
				t.Errorf("%s: Stage while staged %q / transaction %q", p, obs.Host.StagedDigest, obs.Host.ActiveTxn)
			}
		case daemon.ReleaseSlot:
			if !obs.SlotHeld {
				t.Errorf("%s: ReleaseSlot without a slot", p)
			}
		}
		switch e.(type) {
		case daemon.Resolve, daemon.Verify, daemon.Validate, daemon.Stage, daemon.AttachTxn, daemon.Drain, daemon.Finalize:
			long++
		}
		if f, ok := e.(daemon.Finalize); ok && obs.Node.BootID != obs.Node.Status.RebootBootID && f.Digest != "" {
			// Allowed only when RecordBootID precedes it in the same list.
			if !strings.Contains(describe(d.Effects), "RecordBootID("+obs.Node.BootID+")") {
				t.Errorf("%s: Finalize in a boot other than the recorded one", p)
			}
		}
	}
	checkHostFSSafety(t, p, obs, d)
	if long > 1 {
		t.Errorf("%s: %d long effects in one decision: %s", p, long, describe(d.Effects))
	}
}

// checkHostFSSafety: ImageWins is applied only by a slot holder right before finalizing the same
// digest and never undone in the same decision; a backup is never put back for the booted
// digest; /var content is created only from the booted deployment.
func checkHostFSSafety(t *testing.T, p daemon.Phase, obs daemon.Observed, d daemon.Decision) {
	t.Helper()
	applied := map[string]bool{}
	for i, e := range d.Effects {
		switch e := e.(type) {
		case daemon.ApplyEtcPolicy:
			if !obs.SlotHeld {
				t.Errorf("%s: ApplyEtcPolicy without the slot", p)
			}
			if i+1 >= len(d.Effects) || d.Effects[i+1] != (daemon.Finalize{Digest: e.Digest}) {
				t.Errorf("%s: ApplyEtcPolicy(%s) not right before its Finalize: %s", p, e.Digest, describe(d.Effects))
			}
			applied[e.Digest] = true
		case daemon.RestoreEtc:
			if applied[e.Digest] || slices.Contains(d.Effects, daemon.Effect(daemon.ApplyEtcPolicy{Digest: e.Digest})) {
				t.Errorf("%s: RestoreEtc and ApplyEtcPolicy of %s in one decision: %s", p, e.Digest, describe(d.Effects))
			}
			if e.Digest == obs.Host.BootedDigest {
				t.Errorf("%s: RestoreEtc of the booted digest", p)
			}
		case daemon.CreateMissingVar:
			if e.Digest != obs.Host.BootedDigest {
				t.Errorf("%s: CreateMissingVar(%s) while %s is booted", p, e.Digest, obs.Host.BootedDigest)
			}
		}
	}
}
