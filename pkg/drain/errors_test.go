package drain_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"layerd.dev/layerd/pkg/drain"
	"layerd.dev/layerd/pkg/nodestatus"
)

func refsN(ns string, n int) []drain.PodRef {
	out := make([]drain.PodRef, n)
	for i := range out {
		out[i] = drain.PodRef{Namespace: ns, Name: fmt.Sprintf("web-%03d", i)}
	}
	return out
}

func TestTimeoutErrorMessage(t *testing.T) {
	cases := []struct {
		name string
		err  *drain.TimeoutError
		want string
	}{
		{"names_one_pod_and_its_pdb",
			&drain.TimeoutError{After: 30 * time.Second, Pods: refsN("default", 1), PDBs: []string{"default/web-pdb"}},
			"drain timed out after 30s: pod default/web-000 still running (PDB default/web-pdb)"},
		{"names_several_pods_and_pdbs",
			&drain.TimeoutError{After: 90 * time.Second, Pods: refsN("default", 2), PDBs: []string{"default/a", "default/b"}},
			"drain timed out after 1m30s: pods default/web-000, default/web-001 still running (PDBs default/a, default/b)"},
		{"names_pods_without_a_pdb",
			&drain.TimeoutError{After: 1500 * time.Millisecond, Pods: refsN("x", 1)},
			"drain timed out after 2s: pod x/web-000 still running"},
		{"names_unmanaged_pods",
			&drain.TimeoutError{After: time.Minute, Pods: refsN("a", 1), Unmanaged: []drain.PodRef{{Namespace: "b", Name: "solo"}}},
			"drain timed out after 1m0s: pod a/web-000 still running; unmanaged pod b/solo not evicted (force is off)"},
		{"says_little_when_nothing_is_known",
			&drain.TimeoutError{After: 250 * time.Millisecond},
			"drain timed out after 250ms"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.err.Error(); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}

	t.Run("fits_the_message_limit_with_many_pods_and_says_how_many_more", func(t *testing.T) {
		e := &drain.TimeoutError{After: time.Minute, Pods: refsN("a-long-namespace-name", 300),
			PDBs: []string{"a-long-namespace-name/pdb"}, Unmanaged: refsN("other", 40)}
		msg := e.Error()
		if len(msg) > nodestatus.MaxMessageBytes {
			t.Fatalf("%d bytes: %q", len(msg), msg)
		}
		for _, want := range []string{"a-long-namespace-name/web-000", "more still running (PDB a-long-namespace-name/pdb)", "other/web-000", "more not evicted"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("message lacks %q: %s", want, msg)
			}
		}
		if strings.Contains(msg, "…") {
			t.Fatalf("lists were cut instead of shortened: %s", msg)
		}
	})
}

func TestRefusedErrorMessage(t *testing.T) {
	t.Run("names_each_refused_pod_and_the_option_that_would_allow_it", func(t *testing.T) {
		e := &drain.RefusedError{
			Unmanaged:    []drain.PodRef{{Namespace: "default", Name: "solo"}},
			LocalStorage: refsN("db", 2),
			DaemonSet:    []drain.PodRef{{Namespace: "kube-system", Name: "proxy-x"}},
		}
		want := "drain refused, nothing evicted: unmanaged pod default/solo (force is off); " +
			"pods db/web-000, db/web-001 with emptyDir data (deleteEmptyDirData is off); " +
			"DaemonSet pod kube-system/proxy-x (ignoreDaemonSets is off)"
		if got := e.Error(); got != want {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
	})

	t.Run("fits_the_message_limit", func(t *testing.T) {
		e := &drain.RefusedError{Unmanaged: refsN("ns", 500)}
		if msg := e.Error(); len(msg) > nodestatus.MaxMessageBytes || !strings.Contains(msg, "more (force is off)") {
			t.Fatalf("%d bytes: %q", len(msg), msg)
		}
	})
}
