// Package packaging ships layerd's deployment manifests; the test world applies the same files
// so every agent in the tests runs with exactly the permissions a cluster grants it.
package packaging

import "embed"

// Kubernetes holds kubernetes/*.yaml (namespace, ServiceAccount, RBAC).
//
//go:embed kubernetes/*.yaml
var Kubernetes embed.FS
