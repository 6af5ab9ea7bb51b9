package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"layerd.dev/layerd/pkg/image"
)

// ErrForeignAuthFile says the runtime auth file exists and layerd did not write it: it is left
// alone (someone else manages rpm-ostree's credentials).
var ErrForeignAuthFile = errors.New("the runtime auth file was not written by layerd")

// PullSecret makes the agent's registry credentials available to rpm-ostree (DESIGN §3 step 4):
// Secret merged with the admin's HostAuth into RunAuth (0600, written atomically), the admin's
// entry winning for a registry both name, so an admin's credentials are never masked. A RunAuth
// layerd did not write (no matching marker next to it) is never replaced.
type PullSecret struct {
	// Secret is the pull secret (dockerconfigjson, dockercfg, config.json or auth.json).
	Secret string
	// HostAuth is the admin's /etc/ostree/auth.json as seen by the agent (<host-root>/etc/...).
	HostAuth string
	// RunAuth is /run/ostree/auth.json, which rpm-ostree reads before /etc/ostree/auth.json.
	RunAuth string
}

// marker is the file recording the hash of what layerd last wrote to RunAuth.
func (p PullSecret) marker() string {
	return filepath.Join(filepath.Dir(p.RunAuth), "."+filepath.Base(p.RunAuth)+".layerd")
}

// Install writes RunAuth and returns its path. It fails with ErrForeignAuthFile, changing
// nothing, when RunAuth exists and is not layerd's.
func (p PullSecret) Install() (string, error) {
	if p.Secret == "" || p.RunAuth == "" {
		return "", errors.New("pull secret: empty secret or runtime auth path")
	}
	raw, err := os.ReadFile(p.Secret)
	if err != nil {
		return "", fmt.Errorf("reading the pull secret: %w", err)
	}
	ours, err := image.AuthJSON(raw)
	if err != nil {
		return "", fmt.Errorf("pull secret %s: %w", p.Secret, err)
	}
	merged, err := mergeAuths(ours, p.HostAuth)
	if err != nil {
		return "", err
	}
	if err := p.checkOwned(); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(p.RunAuth), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(p.RunAuth), err)
	}
	if err := image.WriteAuthFile(p.RunAuth, merged); err != nil {
		return "", fmt.Errorf("writing %s: %w", p.RunAuth, err)
	}
	if err := os.WriteFile(p.marker(), []byte(hashOf(merged)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("writing %s: %w", p.marker(), err)
	}
	return p.RunAuth, nil
}

// checkOwned returns ErrForeignAuthFile when RunAuth exists with content the marker does not
// vouch for.
func (p PullSecret) checkOwned() error {
	cur, err := os.ReadFile(p.RunAuth)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading %s: %w", p.RunAuth, err)
	}
	mark, err := os.ReadFile(p.marker())
	if err != nil || strings.TrimSpace(string(mark)) != hashOf(cur) {
		return fmt.Errorf("%s: %w", p.RunAuth, ErrForeignAuthFile)
	}
	return nil
}

// mergeAuths adds the admin's entries of hostAuth (when the file exists) to ours; for a
// registry both name, the admin's entry wins.
func mergeAuths(ours []byte, hostAuth string) ([]byte, error) {
	var doc struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal(ours, &doc); err != nil {
		return nil, fmt.Errorf("pull secret: %w", err)
	}
	if doc.Auths == nil {
		doc.Auths = map[string]json.RawMessage{}
	}
	if hostAuth != "" {
		raw, err := os.ReadFile(hostAuth)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return nil, fmt.Errorf("reading %s: %w", hostAuth, err)
		default:
			var admin struct {
				Auths map[string]json.RawMessage `json:"auths"`
			}
			if err := json.Unmarshal(raw, &admin); err != nil {
				return nil, fmt.Errorf("%s is not an auth.json: %w", hostAuth, err)
			}
			for reg, entry := range admin.Auths {
				doc.Auths[reg] = entry
			}
		}
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding the merged auth file: %w", err)
	}
	return out, nil
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
