package main

import (
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"layerd.dev/layerd/pkg/nodestatus"
)

func (d *demo) auditCount() int {
	evs, err := d.w.Kube.AuditEvents()
	if err != nil {
		return -1
	}
	return len(evs)
}

// printWrites prints the API writes each agent made during the rollout, from the audit log.
func (d *demo) printWrites(mark int) {
	evs, err := d.w.Kube.AuditEvents()
	if err != nil || mark < 0 || mark > len(evs) {
		return
	}
	out.printf("")
	out.printf("API writes by each agent during the rollout (apiserver audit log)")
	per := map[string]map[string]int{}
	total := map[string]int{}
	for _, e := range evs[mark:] {
		node := e.NodeName()
		if !e.IsWrite() || node == "" {
			continue
		}
		k := e.Verb
		if r := e.ObjectRef; r != nil {
			k += " " + r.Resource
			if r.Subresource != "" {
				k += "/" + r.Subresource
			}
		}
		if per[node] == nil {
			per[node] = map[string]int{}
		}
		per[node][k]++
		total[node]++
	}
	for _, n := range d.w.Nodes {
		var kinds []string
		for k, c := range per[n.Name] {
			kinds = append(kinds, fmt.Sprintf("%d %s", c, k))
		}
		sort.Strings(kinds)
		out.printf("  %s  %3d: %s", n.Name, total[n.Name], strings.Join(kinds, ", "))
	}
}

// printTimeline prints, per phase, when each node entered it (offset from the annotation).
func (d *demo) printTimeline(wt *progress, t0 time.Time) {
	out.printf("")
	out.printf("Timeline (first time each node entered a phase, from the annotation)")
	header := fmt.Sprintf("  %-16s", "phase")
	for _, n := range d.w.Nodes {
		header += fmt.Sprintf(" %9s", n.Name)
	}
	out.printf("%s", header)
	rows := []string{}
	for _, p := range nodestatus.Phases() {
		rows = append(rows, string(p))
	}
	rows = append(rows, string(nodestatus.StateDone), string(nodestatus.StateDegraded))
	first := wt.firstSeen()
	for _, r := range rows {
		line := fmt.Sprintf("  %-16s", r)
		any := false
		for _, n := range d.w.Nodes {
			if t, ok := first[n.Name][r]; ok {
				line += fmt.Sprintf(" %8.1fs", t.Sub(t0).Seconds())
				any = true
			} else {
				line += fmt.Sprintf(" %9s", "-")
			}
		}
		if any {
			out.printf("%s", line)
		}
	}
	line := fmt.Sprintf("  %-16s", "reboots (box)")
	for _, n := range d.w.Nodes {
		line += fmt.Sprintf(" %9d", n.Reboots())
	}
	out.printf("%s", line)
}

// printLogs says where each node's logs are: they are kept after the teardown.
func (d *demo) printLogs() {
	out.printf("")
	out.printf("Where each node's logs are (kept in %s after the teardown)", d.logs)
	for _, name := range sortedKeys(d.tiers) {
		pad := strings.Repeat(" ", len(name))
		out.printf("  %s  %s", name, d.tiers[name])
		if p, ok := d.agentLog[name]; ok {
			out.printf("  %s  agent pod (stdout+stderr): %s", pad, p)
		}
		if j, ok := d.journal[name]; ok {
			out.printf("  %s  its journal (agent records with their fields, rpm-ostreed, the finalization at shutdown):", pad)
			out.printf("  %s    journalctl -D %s -t layerd -o verbose", pad, j)
			out.printf("  %s    journalctl -D %s -t layerd LAYERD_PHASE=Staging", pad, j)
			out.printf("  %s    journalctl -D %s -u rpm-ostreed.service -u ostree-finalize-staged.service", pad, j)
			continue
		}
		out.printf("  %s  rpm-ostreed stand-in, one per boot: %s (a directory-tier node has no journal)",
			pad, filepath.Join(d.logs, name, "rpmostreed.<boot>.log"))
	}
	out.printf("  the node-in-a-box (reboots, services): %s", filepath.Join(d.logs, "box.log"))
}

func mark(ok bool) string {
	if ok {
		return "✔"
	}
	return "✘"
}

func short(digest string) string {
	d := strings.TrimPrefix(digest, "sha256:")
	if len(d) > 12 {
		d = d[:12]
	}
	if d == "" {
		return "<none>"
	}
	return "sha256:" + d
}
