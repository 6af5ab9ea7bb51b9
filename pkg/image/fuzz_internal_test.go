package image

import (
	"encoding/json"
	"testing"

	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/signature"
)

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		`{"os":"linux","architecture":"amd64","config":{"Labels":{"containers.bootc":"1","version":"41"}}}`,
		`{"os":"linux","architecture":"x86_64","config":{"Labels":{"ostree.bootable":"true"}}}`,
		`{"os":"linux","architecture":"arm64","variant":"v8","config":{}}`,
		`{"config":{"Labels":null}}`, `[]`, `{"config":{"Labels":{"containers.bootc":"0"}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, blob []byte) {
		info, err := parseConfig(blob)
		if err != nil {
			return
		}
		if info.Labels == nil {
			t.Fatal("labels must never be nil")
		}
		_, ostree := info.Labels[LabelOSTreeBootable]
		want := info.Labels[LabelBootc] == "1" || ostree
		if (info.Bootable != "") != want {
			t.Fatalf("bootable=%q for labels %v", info.Bootable, info.Labels)
		}
		if v := info.Version; v != "" && v != info.Labels[LabelOCIVersion] && v != info.Labels[LabelVersion] {
			t.Fatalf("version %q comes from no label", v)
		}
	})
}

func FuzzDescribeScope(f *testing.F) {
	for _, s := range []string{
		`{"default":[{"type":"reject"}]}`,
		`{"default":[{"type":"reject"}],"transports":{"docker":{"127.0.0.1:5000/fcos":[{"type":"insecureAcceptAnything"}]}}}`,
		`{"default":[{"type":"reject"}],"transports":{"docker":{"127.0.0.1:5000":[{"type":"sigstoreSigned","keyData":"AAAA","signedIdentity":{"type":"matchRepoDigestOrExact"}}]}}}`,
		`{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker":{"":[{"type":"reject"}]}}}`,
	} {
		f.Add([]byte(s))
	}
	named, err := reference.ParseNormalizedNamed("127.0.0.1:5000/fcos/os@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := signature.NewPolicyFromBytes(data)
		if err != nil {
			return
		}
		v, err := describeScope(p, named)
		if err != nil {
			t.Fatalf("valid policy, describe failed: %v", err)
		}
		var reqs []json.RawMessage
		if err := json.Unmarshal(v.Requirements, &reqs); err != nil || len(reqs) != len(v.Types) {
			t.Fatalf("requirements %s vs types %v: %v", v.Requirements, v.Types, err)
		}
		if v.Scope == "" {
			t.Fatal("empty scope")
		}
	})
}
