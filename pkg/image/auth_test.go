package image_test

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"layerd.dev/layerd/pkg/image"
)

func TestAuthJSON(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte("u:p"))
	t.Run("converts_a_dockerconfigjson_pull_secret_filling_auth_from_username_and_password", func(t *testing.T) {
		out, err := image.AuthJSON([]byte(`{"auths":{"quay.io":{"username":"u","password":"p","email":"x@y"}}}`))
		if err != nil {
			t.Fatal(err)
		}
		var doc struct {
			Auths map[string]map[string]string `json:"auths"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatal(err)
		}
		if doc.Auths["quay.io"]["auth"] != b64 || doc.Auths["quay.io"]["password"] != "" {
			t.Errorf("got %s", out)
		}
	})
	t.Run("converts_a_legacy_dockercfg_secret", func(t *testing.T) {
		out, err := image.AuthJSON([]byte(`{"registry.example:5000":{"auth":"` + b64 + `"}}`))
		if err != nil {
			t.Fatal(err)
		}
		regs, err := image.AuthRegistries(out)
		if err != nil || len(regs) != 1 || regs[0] != "registry.example:5000" {
			t.Errorf("registries %v %v", regs, err)
		}
	})
	t.Run("errors_never_quote_the_input", func(t *testing.T) {
		for _, in := range []string{`{"auths":{"r":{"auth":"s3cr3t!!"}}}`, `{"auths":{"r":{"auth":s3cr3t}}}`, `{"auths":{"r":{"auth":"s3cr3t"}}`} {
			_, err := image.AuthJSON([]byte(in))
			if err == nil || strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("%s: %v", in, err)
			}
		}
	})
	t.Run("rejects_entries_without_credentials", func(t *testing.T) {
		if _, err := image.AuthJSON([]byte(`{"auths":{"quay.io":{}}}`)); err == nil {
			t.Error("accepted an empty entry")
		}
	})
}

func TestWriteAuthFile(t *testing.T) {
	t.Run("writes_mode_0600_and_replaces_atomically", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "auth.json")
		for _, doc := range []string{`{"auths":{"a":{"auth":"eDp5"}}}`, `{"auths":{"b":{"auth":"eDp5"}}}`} {
			if err := image.WriteAuthFile(p, []byte(doc)); err != nil {
				t.Fatal(err)
			}
		}
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("mode %v", st.Mode())
		}
		got, err := os.ReadFile(p)
		if err != nil || !strings.Contains(string(got), `"b"`) {
			t.Errorf("content %s %v", got, err)
		}
		entries, err := os.ReadDir(filepath.Dir(p))
		if err != nil || len(entries) != 1 {
			t.Errorf("temp files left behind: %v %v", entries, err)
		}
	})
	t.Run("refuses_a_document_that_is_not_auth_json", func(t *testing.T) {
		if err := image.WriteAuthFile(filepath.Join(t.TempDir(), "a.json"), []byte("nope")); err == nil {
			t.Error("wrote garbage")
		}
	})
}
