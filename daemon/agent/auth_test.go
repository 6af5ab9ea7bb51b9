package agent_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"layerd.dev/layerd/daemon/agent"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func auths(t *testing.T, path string) map[string]map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Auths map[string]map[string]string `json:"auths"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return doc.Auths
}

func TestPullSecret(t *testing.T) {
	setup := func(t *testing.T) agent.PullSecret {
		dir := t.TempDir()
		p := agent.PullSecret{
			Secret:   filepath.Join(dir, "secret", ".dockerconfigjson"),
			HostAuth: filepath.Join(dir, "host", "etc", "ostree", "auth.json"),
			RunAuth:  filepath.Join(dir, "run", "ostree", "auth.json"),
		}
		writeFile(t, p.Secret, `{"auths":{"quay.io":{"auth":"c2VjcmV0OnB3"},"registry.test":{"auth":"b3Vyczpwdw=="}}}`)
		return p
	}

	t.Run("merges_with_the_admin's_file_and_the_admin's_entry_wins", func(t *testing.T) {
		p := setup(t)
		writeFile(t, p.HostAuth, `{"auths":{"registry.test":{"auth":"YWRtaW46cHc="},"mirror.local":{"auth":"bTpwdw=="}}}`)
		path, err := p.Install()
		if err != nil {
			t.Fatal(err)
		}
		got := auths(t, path)
		if len(got) != 3 || got["registry.test"]["auth"] != "YWRtaW46cHc=" || got["quay.io"]["auth"] != "c2VjcmV0OnB3" {
			t.Errorf("merged auths %v", got)
		}
		st, err := os.Stat(path)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v (%v), want 0600", st.Mode().Perm(), err)
		}
	})
	t.Run("replaces_a_file_it_wrote", func(t *testing.T) {
		p := setup(t)
		if _, err := p.Install(); err != nil {
			t.Fatal(err)
		}
		writeFile(t, p.Secret, `{"auths":{"quay.io":{"auth":"bmV3OnB3"}}}`)
		if _, err := p.Install(); err != nil {
			t.Fatalf("second install: %v", err)
		}
		if got := auths(t, p.RunAuth); got["quay.io"]["auth"] != "bmV3OnB3" {
			t.Errorf("auths %v after the secret changed", got)
		}
	})
	t.Run("never_replaces_a_file_it_did_not_write", func(t *testing.T) {
		p := setup(t)
		foreign := `{"auths":{"other.io":{"auth":"eDp5"}}}`
		writeFile(t, p.RunAuth, foreign)
		_, err := p.Install()
		if !errors.Is(err, agent.ErrForeignAuthFile) {
			t.Fatalf("Install over a foreign file: %v, want ErrForeignAuthFile", err)
		}
		if b, _ := os.ReadFile(p.RunAuth); string(b) != foreign {
			t.Errorf("the foreign file changed: %s", b)
		}
	})
}
