package updaters

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// PolicyKey is the pool policy field (layerd-config, docs/updaters.md) listing the updaters
// allowed to share a host with layerd, by Updater.Name, case-insensitively; "*" allows any:
//
//	worker:
//	  allowedUpdaters: [zincati]
const PolicyKey = "allowedUpdaters"

// AllowAll in the list allows every updater.
const AllowAll = "*"

// Policy is what a pool allows.
type Policy struct {
	// Allowed are the names of the updaters allowed to coexist with layerd.
	Allowed []string
}

// ParsePolicy reads PolicyKey from a pool's raw policy fields (coord.PoolPolicy.Raw). A missing
// key allows nothing; a value that is not a list of strings is an error.
func ParsePolicy(raw map[string]json.RawMessage) (Policy, error) {
	v, ok := raw[PolicyKey]
	if !ok || string(v) == "null" {
		return Policy{}, nil
	}
	var names []string
	if err := json.Unmarshal(v, &names); err != nil {
		return Policy{}, fmt.Errorf("pool policy %s: want a list of updater names: %w", PolicyKey, err)
	}
	return Policy{Allowed: names}, nil
}

// Allows reports whether the policy lets u share the host.
func (p Policy) Allows(u Updater) bool {
	return slices.ContainsFunc(p.Allowed, func(name string) bool {
		return name == AllowAll || strings.EqualFold(strings.TrimSpace(name), u.Name)
	})
}

// sort puts each found updater into r.Allowed or r.Conflicts.
func (p Policy) sort(found []Updater, r *Report) {
	for _, u := range found {
		if p.Allows(u) {
			r.Allowed = append(r.Allowed, u)
		} else {
			r.Conflicts = append(r.Conflicts, u)
		}
	}
}
