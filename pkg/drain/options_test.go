package drain_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"k8s.io/utils/ptr"

	"layerd.dev/layerd/pkg/drain"
)

func TestOptionsFromPolicy(t *testing.T) {
	raw := func(doc string) map[string]json.RawMessage {
		var m map[string]json.RawMessage
		if err := json.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}

	t.Run("an_empty_policy_is_the_defaults", func(t *testing.T) {
		got, err := drain.OptionsFromPolicy(nil)
		if err != nil || !reflect.DeepEqual(got, drain.Options{}) {
			t.Fatalf("got %+v, %v", got, err)
		}
	})

	t.Run("reads_every_field", func(t *testing.T) {
		got, err := drain.OptionsFromPolicy(raw(`{"maxUnavailable": 2, "drainTimeout": "15m", "drain": {
			"ignoreDaemonSets": false, "deleteEmptyDirData": false, "gracePeriodSeconds": 30,
			"force": true, "podSelector": "app!=batch", "skipWaitForDeleteTimeout": "5m"}}`))
		if err != nil {
			t.Fatal(err)
		}
		want := drain.Options{
			Timeout: 15 * time.Minute, IgnoreDaemonSets: ptr.To(false), DeleteEmptyDirData: ptr.To(false),
			GracePeriodSeconds: ptr.To[int64](30), Force: true, PodSelector: "app!=batch",
			SkipWaitForDeleteTimeout: 5 * time.Minute,
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("got  %+v\nwant %+v", got, want)
		}
	})

	for name, doc := range map[string]string{
		"rejects_a_timeout_that_is_not_a_duration": `{"drainTimeout": 600}`,
		"rejects_a_negative_timeout":               `{"drainTimeout": "-1m"}`,
		"rejects_an_unknown_drain_field":           `{"drain": {"forse": true}}`,
		"rejects_an_invalid_pod_selector":          `{"drain": {"podSelector": "a in (("}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if got, err := drain.OptionsFromPolicy(raw(doc)); err == nil {
				t.Fatalf("accepted %s as %+v", doc, got)
			}
		})
	}
}
