package nodestatus_test

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ns "layerd.dev/layerd/pkg/nodestatus"
	"layerd.dev/layerd/pkg/reason"
)

func TestRead(t *testing.T) {
	t.Run("parses_every_key_of_the_protocol", func(t *testing.T) {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1",
			Labels: map[string]string{ns.LabelPool: "gpu"},
			Annotations: map[string]string{
				ns.AnnotationDesiredImage:       "reg/os:v2",
				ns.AnnotationRetry:              "2",
				ns.AnnotationApproveReboot:      "sha256:a",
				ns.AnnotationState:              "Degraded",
				ns.AnnotationPhase:              "",
				ns.AnnotationReason:             "SignatureRejected",
				ns.AnnotationMessage:            "no",
				ns.AnnotationCurrentImage:       "reg/os@sha256:old",
				ns.AnnotationDesiredDigest:      "sha256:new",
				ns.AnnotationDesiredIndexDigest: "sha256:idx",
				ns.AnnotationResolvedImage:      "reg/os:v2",
				ns.AnnotationObservedRetry:      "1",
				ns.AnnotationStagedImage:        "reg/os@sha256:new",
				ns.AnnotationRebootBootID:       "boot-1",
				ns.AnnotationCordonedBy:         "layerd",
				ns.AnnotationLastTransition:     "2030-01-02T03:04:05Z",
			}}}
		got := ns.Read(node)
		want := ns.Status{DesiredImage: "reg/os:v2", Retry: "2", ApproveReboot: "sha256:a",
			State: ns.StateDegraded, Reason: reason.SignatureRejected, Message: "no",
			CurrentImage: "reg/os@sha256:old", DesiredDigest: "sha256:new", DesiredIndexDigest: "sha256:idx",
			ResolvedImage: "reg/os:v2", ObservedRetry: "1", StagedImage: "reg/os@sha256:new",
			RebootBootID: "boot-1", CordonedBy: "layerd",
			LastTransition: time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC), Pool: "gpu"}
		if got != want {
			t.Fatalf("Read =\n%+v\nwant\n%+v", got, want)
		}
		if !got.CordonedByUs() || !got.RetryRequested() || got.DesiredChanged() {
			t.Fatalf("helpers: cordonedByUs=%v retryRequested=%v desiredChanged=%v", got.CordonedByUs(), got.RetryRequested(), got.DesiredChanged())
		}
	})
	t.Run("a_node_without_annotations_is_in_the_default_pool_with_nothing_to_do", func(t *testing.T) {
		got := ns.Read(&corev1.Node{})
		if got != (ns.Status{Pool: ns.DefaultPool}) || got.DesiredChanged() || got.RetryRequested() {
			t.Fatalf("Read = %+v", got)
		}
		if ns.Read(nil).Pool != ns.DefaultPool {
			t.Fatal("nil node not in default pool")
		}
	})
	t.Run("a_bad_last_transition_reads_as_zero", func(t *testing.T) {
		got := ns.Read(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{ns.AnnotationLastTransition: "yesterday"}}})
		if !got.LastTransition.IsZero() {
			t.Fatalf("LastTransition = %v", got.LastTransition)
		}
	})
	t.Run("a_new_desired_image_or_a_removed_one_is_a_change", func(t *testing.T) {
		s := ns.Status{DesiredImage: "reg/os:v3", ResolvedImage: "reg/os:v2", DesiredDigest: "sha256:x"}
		if !s.DesiredChanged() {
			t.Fatal("new desired-image not a change")
		}
		s.DesiredImage = ""
		if !s.DesiredChanged() {
			t.Fatal("removed desired-image not a change")
		}
		if (ns.Status{DesiredImage: "reg/os:v1"}).DesiredChanged() != true {
			t.Fatal("first desired-image not a change")
		}
	})
	t.Run("an_acknowledged_retry_is_not_requested_again", func(t *testing.T) {
		if (ns.Status{Retry: "a", ObservedRetry: "a"}).RetryRequested() {
			t.Fatal("acknowledged retry requested")
		}
	})
	t.Run("unknown_states_and_phases_are_kept_but_not_known", func(t *testing.T) {
		if ns.State("Sleeping").Known() || ns.Phase("Napping").Known() || !ns.StateDone.Known() || !ns.PhaseRollingBack.Known() {
			t.Fatal("Known() wrong")
		}
	})
}

func TestTruncate(t *testing.T) {
	t.Run("keeps_a_short_message", func(t *testing.T) {
		if got := ns.Truncate("  staged reg/os@sha256:a  ", 1024); got != "staged reg/os@sha256:a" {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("cuts_on_a_rune_boundary_and_marks_the_cut", func(t *testing.T) {
		msg := strings.Repeat("é", 600) // 1200 bytes
		got := ns.Truncate(msg, ns.MaxMessageBytes)
		if len(got) > ns.MaxMessageBytes || !utf8.ValidString(got) || !strings.HasSuffix(got, "…") {
			t.Fatalf("len=%d valid=%v suffix=%q", len(got), utf8.ValidString(got), got[len(got)-4:])
		}
		for max := 0; max < 12; max++ {
			if g := ns.Truncate("日本語テキスト", max); len(g) > max || !utf8.ValidString(g) {
				t.Fatalf("max %d: %q", max, g)
			}
		}
	})
	t.Run("makes_one_valid_line", func(t *testing.T) {
		if got := ns.Truncate("a\nb\tc\xff", 100); got != "a b c\uFFFD" {
			t.Fatalf("got %q", got)
		}
	})
}
