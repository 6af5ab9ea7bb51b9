package daemon

import (
	"fmt"
	"strings"

	"layerd.dev/layerd/pkg/reason"
)

// The decisions about the host's /etc and /var (docs/hostfs.md): the preview after staging
// (in Staged), etcPolicy ImageWins right before Finalize (in Rebooting), varPolicy
// CreateMissing after the boot (in Confirming), and putting an ImageWins backup back whenever
// the update did not reach its digest (every phase, restoreEtc). None of them degrades the
// node except an ImageWins application that fails (EtcPolicyFailed: nothing is rebooted).

// restoreEtc asks to put back every ImageWins backup the host holds from the booted
// deployment, unless next is about to finalize into its digest. Step puts it before the
// effects of every decision, so a failed finalize, a lost slot, a change of desired-image or a boot into
// another deployment (after a crash too: the backups are observed) gives the admin's /etc
// back. In Rebooting, actRebooting decides (it restores when the policy is no longer
// ImageWins).
func restoreEtc(next State, obs Observed) []Effect {
	var out []Effect
	for _, d := range obs.Host.EtcBackups {
		if d == obs.Host.BootedDigest || (next.Phase == PhaseRebooting && d == next.Target.Digest) {
			continue
		}
		out = append(out, RestoreEtc{Digest: d})
	}
	return out
}

// applyEtcPolicy is what Rebooting does to /etc right before Finalize: set the conflicting
// local files aside under ImageWins, or put back a backup of an earlier ImageWins attempt
// when the policy is Keep by now.
func applyEtcPolicy(cur State, obs Observed) []Effect {
	if obs.Policy.EtcImageWins {
		return []Effect{ApplyEtcPolicy{Digest: cur.Target.Digest}}
	}
	for _, d := range obs.Host.EtcBackups {
		if d == cur.Target.Digest {
			return []Effect{RestoreEtc{Digest: d}}
		}
	}
	return nil
}

// previewOutcome takes the result of PreviewHost into cur: its summary, or the failure, not
// warned about yet.
func previewOutcome(cur *State, last Outcome) {
	switch {
	case last.Succeeded(PreviewHost{}.Name()):
		s := HostFSSummary{}
		if last.HostFS != nil {
			s = *last.HostFS
		}
		cur.Preview, cur.Warned = &s, false
	case last.failedWithCode(PreviewHost{}.Name()):
		cur.Preview, cur.Warned = &HostFSSummary{Err: last.Err}, false
	}
}

// stagedMessage is the Staged report: the image and what the preview found.
func stagedMessage(cur State, obs Observed) string {
	msg := "Staged " + about(cur) + "; it is applied by the next planned reboot."
	if p := cur.Preview; p != nil {
		if p.Err != "" {
			msg += " The /etc and /var preview failed: " + p.Err + "."
		} else {
			msg += " " + etcSentence(p, obs.Policy) + " " + varSentence(p, obs.Policy) + limitSentence(p)
		}
	}
	if obs.Policy.Problem != "" {
		msg += " Pool policy: " + obs.Policy.Problem + "."
	}
	return msg
}

// previewWarnings are the Warning Events of a preview: EtcConflict, VarContentNotApplied, or
// HostPreviewFailed.
func previewWarnings(cur State, obs Observed) []Effect {
	p := cur.Preview
	if p == nil {
		return nil
	}
	of := about(cur) + ": "
	if p.Err != "" {
		return []Effect{Warn{Code: reason.HostPreviewFailed, Message: "The /etc and /var preview of " + about(cur) + " failed: " + p.Err}}
	}
	var out []Effect
	if p.EtcConflicts > 0 {
		out = append(out, Warn{Code: reason.EtcConflict, Message: of + etcSentence(p, obs.Policy) + limitSentence(p)})
	}
	if p.VarNotApplied > 0 {
		out = append(out, Warn{Code: reason.VarContentNotApplied, Message: of + varSentence(p, obs.Policy) + limitSentence(p)})
	}
	return out
}

func etcSentence(p *HostFSSummary, pol Policy) string {
	if p.EtcConflicts == 0 {
		return "/etc: no local edit shadows a new default."
	}
	what := "etcPolicy Keep: the local versions stay, the image's changes to them are lost"
	if pol.EtcImageWins {
		what = "etcPolicy ImageWins: the new defaults replace them at the reboot, the local versions are kept in /var/lib/layerd/etc-backup"
	}
	return fmt.Sprintf("/etc: %d local %s a new image default (%s): %s.",
		p.EtcConflicts, plural(p.EtcConflicts, "edit shadows", "edits shadow"), what, paths(p.EtcConflictPaths, p.EtcConflicts))
}

func varSentence(p *HostFSSummary, pol Policy) string {
	if p.VarNotApplied == 0 {
		return "/var: the host has everything the image ships."
	}
	what := "varPolicy Report: not created"
	if pol.VarCreateMissing {
		what = "varPolicy CreateMissing: the missing ones are created after the boot, nothing existing is changed"
	}
	return fmt.Sprintf("/var: %d %s the image ships %s not on the host as shipped (%s): %s.",
		p.VarNotApplied, plural(p.VarNotApplied, "path", "paths"), plural(p.VarNotApplied, "is", "are"), what,
		paths(p.VarPaths, p.VarNotApplied))
}

func limitSentence(p *HostFSSummary) string {
	if p.Limit == "" {
		return ""
	}
	return " The preview stopped at a limit (" + p.Limit + "): the counts are partial."
}

// varAfterBoot is what Confirming does for varPolicy CreateMissing: CreateMissingVar once,
// then a warning about what it did not create. done reports that nothing is left to do.
func varAfterBoot(cur *State, obs Observed) (effects []Effect, done bool) {
	if !obs.Policy.VarCreateMissing || cur.VarCreated {
		return nil, true
	}
	last := obs.Last
	switch {
	case last.failedWithCode(CreateMissingVar{}.Name()):
		cur.VarCreated = true
		return []Effect{Warn{Code: reason.VarContentNotApplied,
			Message: "Creating the /var content " + about(*cur) + " ships failed: " + last.Err}}, false
	case last.Succeeded(CreateMissingVar{}.Name()):
		cur.VarCreated = true
		if s := last.HostFS; s != nil && s.VarNotApplied > 0 {
			return []Effect{Warn{Code: reason.VarContentNotApplied, Message: fmt.Sprintf(
				"After the boot into %s: created %d %s under /var; %d %s the image ships %s not created, the host's version is left untouched: %s.",
				about(*cur), s.VarCreated, plural(s.VarCreated, "path", "paths"), s.VarNotApplied,
				plural(s.VarNotApplied, "path", "paths"), plural(s.VarNotApplied, "was", "were"), paths(s.VarPaths, s.VarNotApplied))}}, false
		}
		return nil, true
	}
	return []Effect{CreateMissingVar{Digest: cur.Target.Digest}}, false
}

// paths lists the first paths of n, with an ellipsis when there are more.
func paths(first []string, n int) string {
	s := strings.Join(first, ", ")
	if n > len(first) {
		s += fmt.Sprintf(" and %d more", n-len(first))
	}
	return s
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
