package hostfs

import (
	"encoding/json"
	"errors"
	"fmt"
)

// EtcPolicy is a pool's etcPolicy: what happens to local /etc edits that
// conflict with a default the staged image changed.
type EtcPolicy string

// VarPolicy is a pool's varPolicy: what happens to content the staged image
// ships under /var that the host lacks.
type VarPolicy string

// The policy values (docs/hostfs.md).
const (
	// EtcPolicyKeep (default) keeps libostree's merge: the local edit wins,
	// the conflict is reported.
	EtcPolicyKeep EtcPolicy = "Keep"
	// EtcPolicyImageWins sets the conflicting local files aside right before
	// finalize (EtcBackupAndApply) so the new defaults apply.
	EtcPolicyImageWins EtcPolicy = "ImageWins"
	// VarPolicyReport (default) only reports what /var lacks.
	VarPolicyReport VarPolicy = "Report"
	// VarPolicyCreateMissing creates what /var lacks after the boot
	// (CreateMissingVar).
	VarPolicyCreateMissing VarPolicy = "CreateMissing"
)

// Pool policy keys PolicyFromRaw reads.
const (
	KeyEtcPolicy = "etcPolicy"
	KeyVarPolicy = "varPolicy"
)

// Policy is a pool's etcPolicy and varPolicy.
type Policy struct {
	Etc EtcPolicy
	Var VarPolicy
}

// DefaultPolicy is the policy of a pool that sets neither key.
func DefaultPolicy() Policy { return Policy{Etc: EtcPolicyKeep, Var: VarPolicyReport} }

// ErrInvalidPolicy is wrapped by PolicyFromRaw for a value it does not know.
var ErrInvalidPolicy = errors.New("invalid pool policy value")

// PolicyFromRaw reads etcPolicy and varPolicy from a pool's policy fields
// (coord.PoolPolicy.Raw). A missing key or null is the default. A value
// that is not one of the names above (they are case-sensitive) is an error
// wrapping ErrInvalidPolicy; the returned Policy then has the default for
// that key, which changes nothing on the host.
func PolicyFromRaw(raw map[string]json.RawMessage) (Policy, error) {
	p := DefaultPolicy()
	var errs []error
	if v, err := stringField(raw, KeyEtcPolicy); err != nil {
		errs = append(errs, err)
	} else if v != "" {
		switch EtcPolicy(v) {
		case EtcPolicyKeep, EtcPolicyImageWins:
			p.Etc = EtcPolicy(v)
		default:
			errs = append(errs, fmt.Errorf("%s %q is an %w (want %s or %s)", KeyEtcPolicy, v, ErrInvalidPolicy, EtcPolicyKeep, EtcPolicyImageWins))
		}
	}
	if v, err := stringField(raw, KeyVarPolicy); err != nil {
		errs = append(errs, err)
	} else if v != "" {
		switch VarPolicy(v) {
		case VarPolicyReport, VarPolicyCreateMissing:
			p.Var = VarPolicy(v)
		default:
			errs = append(errs, fmt.Errorf("%s %q is an %w (want %s or %s)", KeyVarPolicy, v, ErrInvalidPolicy, VarPolicyReport, VarPolicyCreateMissing))
		}
	}
	return p, errors.Join(errs...)
}

// stringField returns raw[key] as a string ("" when missing or null).
func stringField(raw map[string]json.RawMessage, key string) (string, error) {
	v, ok := raw[key]
	if !ok || string(v) == "null" {
		return "", nil
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		return "", fmt.Errorf("%s %s is an %w (want a string)", key, v, ErrInvalidPolicy)
	}
	if s == "" {
		return "", fmt.Errorf("%s \"\" is an %w (want a name)", key, ErrInvalidPolicy)
	}
	return s, nil
}
