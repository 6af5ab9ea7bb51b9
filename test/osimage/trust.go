package osimage

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
)

// TrustFiles are the containers/image configuration files for a test
// registry, as layerd and the rpm-ostreed stand-in consume them.
type TrustFiles struct {
	Dir string
	// PolicyPath is policy.json ("" when only registry access was written).
	PolicyPath string
	// RegistriesDDir is registries.d/, whose default.yaml enables sigstore
	// attachments for every docker registry.
	RegistriesDDir string
	// RegistriesConfPath is registries.conf marking the registry insecure
	// (plain HTTP); RegistriesConfDir is an empty registries.conf.d.
	RegistriesConfPath string
	RegistriesConfDir  string
	// BlobInfoCacheDir isolates containers/image's blob-info cache.
	BlobInfoCacheDir string
}

// WriteTrust writes, under dir, a policy.json, registries.d and
// registries.conf for registryAddr ("127.0.0.1:PORT").
//
// The policy rejects everything by default; docker images under each scope
// (default: the whole registry, registryAddr) need a sigstore signature by
// keys with the matchRepoDigestOrExact identity rule. Scopes are policy.json
// docker scopes: "HOST", "HOST/repo", "HOST/repo:tag". The oci and dir
// transports (local copies) are accepted without signatures.
func WriteTrust(dir, registryAddr string, keys *Keys, scopes ...string) (TrustFiles, error) {
	if keys == nil {
		return TrustFiles{}, errors.New("write trust: no keys")
	}
	if len(scopes) == 0 {
		scopes = []string{registryAddr}
	}
	return writeTrustFiles(dir, registryAddr, keys, scopes)
}

func writeTrustFiles(dir, registryAddr string, keys *Keys, scopes []string) (TrustFiles, error) {
	if registryAddr == "" || strings.ContainsAny(registryAddr, "/\"\n") {
		return TrustFiles{}, fmt.Errorf("write trust: invalid registry address %q", registryAddr)
	}
	tf := TrustFiles{
		Dir:                dir,
		RegistriesDDir:     filepath.Join(dir, "registries.d"),
		RegistriesConfPath: filepath.Join(dir, "registries.conf"),
		RegistriesConfDir:  filepath.Join(dir, "registries.conf.d"),
		BlobInfoCacheDir:   filepath.Join(dir, "blob-info-cache"),
	}
	for _, d := range []string{tf.RegistriesDDir, tf.RegistriesConfDir, tf.BlobInfoCacheDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return TrustFiles{}, fmt.Errorf("write trust: %w", err)
		}
	}
	files := map[string]string{
		filepath.Join(tf.RegistriesDDir, "default.yaml"): "default-docker:\n  use-sigstore-attachments: true\n",
		tf.RegistriesConfPath: fmt.Sprintf("unqualified-search-registries = []\n\n[[registry]]\n"+
			"prefix = %q\nlocation = %q\ninsecure = true\n", registryAddr, registryAddr),
	}
	if keys != nil {
		policy, err := policyJSON(keys, scopes)
		if err != nil {
			return TrustFiles{}, fmt.Errorf("write trust: %w", err)
		}
		tf.PolicyPath = filepath.Join(dir, "policy.json")
		files[tf.PolicyPath] = string(policy)
	}
	for p, content := range files {
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return TrustFiles{}, fmt.Errorf("write trust: %w", err)
		}
	}
	return tf, nil
}

func policyJSON(keys *Keys, scopes []string) ([]byte, error) {
	docker := signature.PolicyTransportScopes{}
	for _, s := range scopes {
		req, err := signature.NewPRSigstoreSignedKeyPath(keys.PublicKeyPath, signature.NewPRMMatchRepoDigestOrExact())
		if err != nil {
			return nil, fmt.Errorf("policy requirement for %s: %w", s, err)
		}
		docker[s] = signature.PolicyRequirements{req}
	}
	accept := signature.PolicyTransportScopes{"": {signature.NewPRInsecureAcceptAnything()}}
	p := &signature.Policy{
		Default:    signature.PolicyRequirements{signature.NewPRReject()},
		Transports: map[string]signature.PolicyTransportScopes{"docker": docker, "oci": accept, "dir": accept},
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode policy: %w", err)
	}
	if _, err := signature.NewPolicyFromBytes(data); err != nil {
		return nil, fmt.Errorf("policy does not parse back: %w", err)
	}
	return append(data, '\n'), nil
}

// SystemContext is an isolated containers/image context using these files.
func (tf TrustFiles) SystemContext() *types.SystemContext {
	return &types.SystemContext{
		SignaturePolicyPath:         tf.PolicyPath,
		RegistriesDirPath:           tf.RegistriesDDir,
		SystemRegistriesConfPath:    tf.RegistriesConfPath,
		SystemRegistriesConfDirPath: tf.RegistriesConfDir,
		BlobInfoCacheDir:            tf.BlobInfoCacheDir,
		AuthFilePath:                filepath.Join(tf.Dir, "auth.json"),
		DockerInsecureSkipTLSVerify: types.OptionalBoolTrue,
	}
}

// PolicyContext loads PolicyPath. The caller must Destroy it.
func (tf TrustFiles) PolicyContext() (*signature.PolicyContext, error) {
	if tf.PolicyPath == "" {
		return nil, errors.New("no policy.json written")
	}
	p, err := signature.NewPolicyFromFile(tf.PolicyPath)
	if err != nil {
		return nil, fmt.Errorf("load policy: %w", err)
	}
	pc, err := signature.NewPolicyContext(p)
	if err != nil {
		return nil, fmt.Errorf("policy context: %w", err)
	}
	return pc, nil
}
