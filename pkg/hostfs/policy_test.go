package hostfs_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/hostfs"
)

func TestPolicyFromRaw(t *testing.T) {
	def := hostfs.DefaultPolicy()
	cases := []struct {
		name    string
		raw     map[string]json.RawMessage
		want    hostfs.Policy
		wantErr string // substring; "" means no error
	}{
		{"nothing_set_is_keep_and_report", nil, def, ""},
		{"other_keys_are_ignored", map[string]json.RawMessage{"maxUnavailable": json.RawMessage(`2`)}, def, ""},
		{"null_is_the_default", map[string]json.RawMessage{"etcPolicy": json.RawMessage(`null`)}, def, ""},
		{"image_wins_and_create_missing", map[string]json.RawMessage{
			"etcPolicy": json.RawMessage(`"ImageWins"`), "varPolicy": json.RawMessage(`"CreateMissing"`)},
			hostfs.Policy{Etc: hostfs.EtcPolicyImageWins, Var: hostfs.VarPolicyCreateMissing}, ""},
		{"explicit_defaults", map[string]json.RawMessage{
			"etcPolicy": json.RawMessage(`"Keep"`), "varPolicy": json.RawMessage(`"Report"`)}, def, ""},
		{"values_are_case_sensitive", map[string]json.RawMessage{"etcPolicy": json.RawMessage(`"imagewins"`)},
			def, `etcPolicy "imagewins" is an invalid pool policy value (want Keep or ImageWins)`},
		{"an_unknown_var_policy_keeps_a_valid_etc_policy", map[string]json.RawMessage{
			"etcPolicy": json.RawMessage(`"ImageWins"`), "varPolicy": json.RawMessage(`"Create"`)},
			hostfs.Policy{Etc: hostfs.EtcPolicyImageWins, Var: hostfs.VarPolicyReport}, `varPolicy "Create" is an invalid pool policy value (want Report or CreateMissing)`},
		{"a_number_is_not_a_policy", map[string]json.RawMessage{"varPolicy": json.RawMessage(`1`)}, def, "varPolicy 1 is an invalid pool policy value (want a string)"},
		{"an_empty_string_is_not_a_policy", map[string]json.RawMessage{"etcPolicy": json.RawMessage(`""`)}, def, `etcPolicy "" is an invalid pool policy value`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := hostfs.PolicyFromRaw(c.raw)
			if got != c.want {
				t.Errorf("policy %+v, want %+v", got, c.want)
			}
			switch {
			case c.wantErr == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)):
				t.Errorf("error %v, want one containing %q", err, c.wantErr)
			case c.wantErr != "" && !errors.Is(err, hostfs.ErrInvalidPolicy):
				t.Errorf("error %v does not wrap ErrInvalidPolicy", err)
			}
		})
	}
}
