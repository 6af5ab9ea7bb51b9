package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/test/harness"
	"layerd.dev/layerd/test/osimage"
)

// TestAgentOnABootedNode runs `layerd agent` as a DaemonSet pod on a booted-tier node (real
// systemd, journald and logind under systemd-nspawn; the stand-in inside as rpm-ostreed.service),
// with --log-journal=auto: the agent finds the node's journald socket in the node's /run. A
// signed layered image annotated on the Node ends Done on its digest after exactly one real
// `systemctl reboot`; the agent's records are in the node's persistent journal with their
// fields; /metrics and /healthz of the agent before and after the reboot say what happened.
func TestAgentOnABootedNode(t *testing.T) {
	if os.Getenv("LAYERD_K8S_BIN") == "" {
		t.Fatal("LAYERD_K8S_BIN is not set (export LAYERD_K8S_BIN=$(hack/deps.sh))")
	}
	var boxLog io.Writer = io.Discard
	if testing.Verbose() {
		boxLog = os.Stderr
	}
	began := time.Now()
	w := harness.Start(t, harness.Options{Nodes: 1, Booted: 1, Log: boxLog})
	t.Logf("world with one booted node up in %v", time.Since(began).Round(time.Millisecond))
	n := w.Nodes[0]
	if !n.BootedTier() {
		t.Fatalf("%s is not a booted-tier node", n.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	kube := w.Kube.Client

	img, err := w.BootedImage(ctx, osimage.Spec{Repo: harness.BootedBaseRepo, Tag: "agent", Version: "2.0", Files: map[string]osimage.File{
		"usr/bin/mytool": {Mode: 0o755, Content: "#!/bin/sh\necho mytool 2.0\n"},
		"etc/motd":       {Content: "Welcome to the booted layerd test OS 2.0\n"},
	}})
	if err != nil {
		t.Fatalf("building the layered image: %v", err)
	}
	if err := osimage.Sign(ctx, img.Pinned, w.Keys); err != nil {
		t.Fatalf("signing %s: %v", img.Pinned, err)
	}

	kubeconfig, err := n.AgentKubeconfig(ctx)
	if err != nil {
		t.Fatalf("agent kubeconfig: %v", err)
	}
	var logs syncBuffer
	_, stop, err := n.RunPod(w.AgentPod(n, layerdBinary(t), kubeconfig, &logs, "--log-journal", "auto"))
	if err != nil {
		t.Fatalf("starting the agent pod on %s: %v", n.Name, err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("stopping the agent pod: %v", err)
		}
		if t.Failed() {
			t.Logf("agent log:\n%s", logs.String())
		}
	}()
	sc := &agentScraper{logs: &logs, samples: map[string]families{}}
	sctx, stopScraping := context.WithCancel(ctx)
	scraped := make(chan struct{})
	go func() { sc.run(sctx); close(scraped) }()
	defer func() { stopScraping(); <-scraped }()

	waitNode(ctx, t, kube, n.Name, "agent up", func(s nodestatus.Status) bool { return s.State == nodestatus.StateDone })
	reboots, firstBoot := n.Reboots(), n.Nspawn().BootID()
	began = time.Now()
	annotate(ctx, t, kube, n.Name, img.Ref)
	phases := waitNode(ctx, t, kube, n.Name, "Done on "+img.Pinned, func(s nodestatus.Status) bool {
		return s.State == nodestatus.StateDone && s.CurrentImage == img.Pinned
	})
	t.Logf("Done after %v; phases: %s", time.Since(began).Round(time.Millisecond), strings.Join(phases, " → "))
	digest := img.Digest.String()

	t.Run("the_node_ends_Done_on_the_new_digest_after_exactly_one_real_reboot", func(t *testing.T) {
		if got := n.Reboots() - reboots; got != 1 {
			t.Errorf("%d reboots counted by the harness (boot IDs), want 1", got)
		}
		bootNow := n.Nspawn().BootID()
		if bootNow == firstBoot || bootNow == "" {
			t.Errorf("boot ID %q after the update, first boot %q", bootNow, firstBoot)
		}
		node, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s := nodestatus.Read(node)
		if s.DesiredDigest != digest || node.Status.NodeInfo.BootID != bootNow || node.Spec.Unschedulable || s.CordonedBy != "" {
			t.Errorf("after Done: desired-digest %q, Node boot ID %q (running %q), unschedulable %v, cordoned-by %q",
				s.DesiredDigest, node.Status.NodeInfo.BootID, bootNow, node.Spec.Unschedulable, s.CordonedBy)
		}
		if st := status(t, connect(t, n)); digestOf(st.Booted) != digest || st.Staged != nil {
			t.Errorf("rpm-ostree inside: booted %s, staged %v; want %s booted, nothing staged", digestOf(st.Booted), st.Staged, digest)
		}
		if got, err := n.Nspawn().Exec(ctx, "/usr/bin/mytool"); err != nil || string(got) != "mytool 2.0\n" {
			t.Errorf("mytool inside the rebooted node: %q, %v", got, err)
		}
		for _, want := range []string{"Staging", "Rebooting", "Confirming"} {
			if !containsPhase(phases, want) {
				t.Errorf("phase %s never observed in %v", want, phases)
			}
		}
	})

	t.Run("journalctl_inside_the_node_shows_the_staging_entries_by_digest", func(t *testing.T) {
		out, err := n.Journal(ctx, "-t", "layerd", "LAYERD_DIGEST="+digest, "-o", "json")
		if err != nil {
			t.Fatalf("journalctl -t layerd LAYERD_DIGEST=%s: %v", digest, err)
		}
		entries := journalEntries(t, out)
		var staging []map[string]string
		for _, e := range entries {
			if e["SYSLOG_IDENTIFIER"] != "layerd" || e["LAYERD_DIGEST"] != digest || e["LAYERD_NODE"] != n.Name {
				t.Errorf("entry with identifier %q, digest %q, node %q: %v", e["SYSLOG_IDENTIFIER"], e["LAYERD_DIGEST"], e["LAYERD_NODE"], e)
			}
			if e["LAYERD_PHASE"] == "Staging" {
				staging = append(staging, e)
			}
		}
		t.Logf("%d entries for the digest, %d of them in phase Staging", len(entries), len(staging))
		byMessage := map[string]map[string]string{}
		for _, e := range staging {
			t.Logf("  %s PRIORITY=%s LAYERD_IMAGE=%s LAYERD_EFFECT=%s boot %s", e["MESSAGE"], e["PRIORITY"], e["LAYERD_IMAGE"], e["LAYERD_EFFECT"], e["_BOOT_ID"])
			byMessage[e["MESSAGE"]] = e
		}
		first := strings.ReplaceAll(firstBoot, "-", "")
		// The transition into the phase names the image as annotated.
		if e, ok := byMessage["phase Staging"]; !ok || e["LAYERD_IMAGE"] != img.Ref || e["PRIORITY"] != "6" || e["_BOOT_ID"] != first {
			t.Errorf("\"phase Staging\" entry %v; want LAYERD_IMAGE=%s, PRIORITY=6, the first boot %s", e, img.Ref, first)
		}
		for _, msg := range []string{"staging", "staged"} {
			e, ok := byMessage[msg]
			if !ok {
				t.Errorf("no %q entry in phase Staging", msg)
				continue
			}
			// zap's Info is syslog's info (6); the staging happened before the reboot.
			if e["PRIORITY"] != "6" || e["LAYERD_IMAGE"] != img.Pinned || e["_BOOT_ID"] != first {
				t.Errorf("%q: PRIORITY=%s LAYERD_IMAGE=%s _BOOT_ID=%s; want 6, %s, the first boot %s",
					msg, e["PRIORITY"], e["LAYERD_IMAGE"], e["_BOOT_ID"], img.Pinned, first)
			}
		}
		// The journal is the node's persistent one: the phase after the reboot is there too.
		confirming := false
		for _, e := range entries {
			confirming = confirming || (e["LAYERD_PHASE"] == "Confirming" && e["_BOOT_ID"] != first)
		}
		if !confirming {
			t.Errorf("no Confirming entry from the boot after the reboot")
		}
	})

	t.Run("metrics_before_the_reboot_count_it_and_after_it_show_the_booted_digest", func(t *testing.T) {
		addrs := sc.addresses()
		if len(addrs) != 2 {
			t.Fatalf("agent processes serving metrics: %v, want 2 (one per boot)", addrs)
		}
		before, after := sc.last(addrs[0]), sc.last(addrs[1])
		if before == nil || after == nil {
			t.Fatalf("no scrape of %v", addrs)
		}
		// The first process's last scrape: it finalized (one reboot started), in Rebooting,
		// with the image staged.
		expect(t, "before the reboot", before, map[string]float64{
			"layerd_reboots_total":            1,
			`layerd_phase{phase="Rebooting"}`: 1,
			`layerd_state{state="Working"}`:   1,
		})
		if b, s := before.info(); b != w.BootedBase.Digest.String() || s != digest {
			t.Errorf("before the reboot: layerd_info booted %q staged %q, want %s and %s", b, s, w.BootedBase.Digest, digest)
		}
		// The process after the reboot started no reboot; it reports Done on the new digest.
		expect(t, "after the reboot", after, map[string]float64{
			"layerd_reboots_total":            0,
			`layerd_state{state="Done"}`:      1,
			`layerd_state{state="Working"}`:   0,
			`layerd_phase{phase="Rebooting"}`: 0,
		})
		if b, s := after.info(); b != digest || s != "" {
			t.Errorf("after the reboot: layerd_info booted %q staged %q, want %s and none", b, s, digest)
		}
		for _, p := range []string{"/healthz", "/readyz"} {
			if code, body := httpGet(ctx, "http://"+addrs[1]+p); code != http.StatusOK {
				t.Errorf("GET %s: %d %s", p, code, body)
			}
		}
	})
}

// journalEntries parses `journalctl -o json` output; fields that are not strings (binary or
// repeated) are kept as their JSON text.
func journalEntries(t *testing.T, out string) []map[string]string {
	t.Helper()
	var entries []map[string]string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(line), &raw); err != nil {
			t.Fatalf("journal entry %q: %v", line, err)
		}
		e := map[string]string{}
		for k, v := range raw {
			var s string
			if json.Unmarshal(v, &s) == nil {
				e[k] = s
			} else {
				e[k] = string(v)
			}
		}
		entries = append(entries, e)
	}
	return entries
}

// agentScraper scrapes /metrics of the agent's current process every 100 ms and keeps each
// process's last scrape: the pod's process of one boot ends with that boot, so what it said
// last (after it finalized) is only seen by scraping while it runs.
type agentScraper struct {
	logs    *syncBuffer
	mu      sync.Mutex
	order   []string
	samples map[string]families
}

func (s *agentScraper) run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if m := servingAddr.FindAllStringSubmatch(s.logs.String(), -1); len(m) > 0 {
			addr := m[len(m)-1][1]
			if f := scrapeFamilies(ctx, "http://"+addr+"/metrics"); f != nil {
				s.mu.Lock()
				if _, ok := s.samples[addr]; !ok {
					s.order = append(s.order, addr)
				}
				s.samples[addr] = f
				s.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// addresses are the metrics addresses scraped, in the order the processes started.
func (s *agentScraper) addresses() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.order...)
}

func (s *agentScraper) last(addr string) families {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.samples[addr]
}

// families is one scrape, by metric name.
type families map[string]*dto.MetricFamily

// scrapeFamilies fetches and parses url, nil when it cannot (the process is gone).
func scrapeFamilies(ctx context.Context, url string) families {
	code, body := httpGet(ctx, url)
	if code != http.StatusOK {
		return nil
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil
	}
	return families(fams)
}

func httpGet(ctx context.Context, url string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err.Error()
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode, string(b)
}

// value is the value of the series written as in the exposition format (`name` or
// `name{label="v"}`, one label at most), and whether it exists.
func (f families) value(series string) (float64, bool) {
	name, label, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	fam, ok := f[name]
	if !ok {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		var pairs []string
		for _, l := range m.GetLabel() {
			pairs = append(pairs, l.GetName()+`="`+l.GetValue()+`"`)
		}
		sort.Strings(pairs)
		if strings.Join(pairs, ",") != label {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		}
	}
	return 0, false
}

// info is the booted and staged digest of the one layerd_info series.
func (f families) info() (booted, staged string) {
	fam, ok := f["layerd_info"]
	if !ok || len(fam.GetMetric()) != 1 {
		return "<no single layerd_info>", ""
	}
	for _, l := range fam.GetMetric()[0].GetLabel() {
		switch l.GetName() {
		case "booted_digest":
			booted = l.GetValue()
		case "staged_digest":
			staged = l.GetValue()
		}
	}
	return booted, staged
}

func expect(t *testing.T, when string, f families, want map[string]float64) {
	t.Helper()
	for series, v := range want {
		got, ok := f.value(series)
		switch {
		case !ok:
			t.Errorf("%s: %s not in /metrics", when, series)
		case got != v:
			t.Errorf("%s: %s = %v, want %v", when, series, got, v)
		}
	}
}
