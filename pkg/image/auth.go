package image

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// KubeletAuthFile is where a kubelet keeps node-wide registry credentials (docker config.json).
const KubeletAuthFile = "/var/lib/kubelet/config.json"

// authEntry is one registry's credentials in docker config.json / containers auth.json.
type authEntry struct {
	Auth          string `json:"auth,omitempty"`
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
}

// AuthJSON converts registry credentials into a containers auth.json document. It accepts a
// Kubernetes pull secret payload (`.dockerconfigjson`: {"auths":{…}}; legacy `.dockercfg`:
// {"registry":{…}}), a kubelet config.json, or an auth.json. Entries that only carry
// username/password get the "auth" field go.podman.io/image reads. Errors never quote secrets.
func AuthJSON(data []byte) ([]byte, error) {
	var doc struct {
		Auths map[string]authEntry `json:"auths"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("parsing registry credentials: %w", redactJSONError(err))
	}
	if doc.Auths == nil {
		legacy := map[string]authEntry{}
		if err := json.Unmarshal(data, &legacy); err != nil {
			return nil, fmt.Errorf("parsing legacy .dockercfg credentials: %w", redactJSONError(err))
		}
		doc.Auths = legacy
	}
	out := map[string]authEntry{}
	for reg, e := range doc.Auths {
		if e.Auth == "" && e.Username != "" {
			e.Auth = base64.StdEncoding.EncodeToString([]byte(e.Username + ":" + e.Password))
		}
		if e.Auth == "" && e.IdentityToken == "" {
			return nil, fmt.Errorf("credentials for %s carry neither auth, username nor identitytoken", reg)
		}
		if e.Auth != "" {
			if _, err := base64.StdEncoding.DecodeString(e.Auth); err != nil {
				return nil, fmt.Errorf("credentials for %s: auth is not base64", reg)
			}
		}
		out[reg] = authEntry{Auth: e.Auth, IdentityToken: e.IdentityToken}
	}
	return json.Marshal(struct {
		Auths map[string]authEntry `json:"auths"`
	}{out})
}

// redactJSONError keeps the kind of a JSON error but drops anything that could quote input.
func redactJSONError(err error) error {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return fmt.Errorf("invalid JSON at byte %d", syn.Offset)
	}
	var typ *json.UnmarshalTypeError
	if errors.As(err, &typ) {
		return fmt.Errorf("unexpected %s for field %q", typ.Value, typ.Field)
	}
	return errors.New("invalid JSON")
}

// AuthRegistries lists the registries an auth.json has credentials for; safe to log.
func AuthRegistries(authJSON []byte) ([]string, error) {
	var doc struct {
		Auths map[string]json.RawMessage `json:"auths"`
	}
	if err := json.Unmarshal(authJSON, &doc); err != nil {
		return nil, fmt.Errorf("parsing auth.json: %w", redactJSONError(err))
	}
	regs := make([]string, 0, len(doc.Auths))
	for r := range doc.Auths {
		regs = append(regs, r)
	}
	sort.Strings(regs)
	return regs, nil
}

// WriteAuthFile writes authJSON to path with mode 0600, atomically (temp file + rename), for
// Options.AuthFilePath.
func WriteAuthFile(path string, authJSON []byte) error {
	if _, err := AuthRegistries(authJSON); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".auth-*.json")
	if err != nil {
		return fmt.Errorf("writing auth file: %w", err)
	}
	err = writeAndClose(f, authJSON)
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return errors.Join(fmt.Errorf("writing auth file %s: %w", path, err), ignoreNotExist(os.Remove(f.Name())))
	}
	return nil
}

func writeAndClose(f *os.File, data []byte) error {
	err := f.Chmod(0o600)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func ignoreNotExist(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
