package packaging_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"go.podman.io/image/v5/signature"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"

	"layerd.dev/layerd/pkg/image"
	"layerd.dev/layerd/pkg/reason"
	"layerd.dev/layerd/test/osimage"
	"layerd.dev/layerd/test/registry"
)

// signaturePolicyVolume is the DaemonSet volume holding the shipped signature policy.
const signaturePolicyVolume = "signature-policy"

// shippedPolicy returns the policy.json the DaemonSet's --policy flag reads, following the flag
// to its mount, the mount to its ConfigMap volume and the volume to the shipped ConfigMap.
func shippedPolicy(t *testing.T) []byte {
	t.Helper()
	ds := daemonSet(t)
	c, args := containerArgs(t, ds)
	dir, file := filepath.Split(args["policy"])
	var mount *corev1.VolumeMount
	for i := range c.VolumeMounts {
		if filepath.Clean(c.VolumeMounts[i].MountPath) == filepath.Clean(dir) {
			mount = &c.VolumeMounts[i]
		}
	}
	if mount == nil || mount.Name != signaturePolicyVolume || !mount.ReadOnly {
		t.Fatalf("--policy=%s is not read from the read-only %s volume (mount %+v)", args["policy"], signaturePolicyVolume, mount)
	}
	var cmName string
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == mount.Name && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName == "" {
		t.Fatalf("volume %s is not a ConfigMap", mount.Name)
	}
	for _, o := range objects(t) {
		if cm, ok := o.(*corev1.ConfigMap); ok && cm.Name == cmName {
			if cm.Namespace != ds.Namespace {
				t.Fatalf("ConfigMap %s is in %s, the DaemonSet in %s", cm.Name, cm.Namespace, ds.Namespace)
			}
			data, ok := cm.Data[file]
			if !ok {
				t.Fatalf("ConfigMap %s has no key %s", cm.Name, file)
			}
			return []byte(data)
		}
	}
	t.Fatalf("packaging/kubernetes holds no ConfigMap %s", cmName)
	return nil
}

// The DaemonSet's default is "reject unsigned" whatever the host's /etc/containers/policy.json
// says (stock Fedora CoreOS accepts anything): the shipped policy rejects every image until the
// admin adds a scope, checked through the real verifier against a loopback registry.
func TestShippedSignaturePolicy(t *testing.T) {
	raw := shippedPolicy(t)
	pol, err := signature.NewPolicyFromBytes(raw)
	if err != nil {
		t.Fatalf("the shipped policy does not parse: %v", err)
	}
	if len(pol.Default) != 1 {
		t.Fatalf("default has %d requirements, want exactly reject", len(pol.Default))
	}
	for transport, scopes := range pol.Transports {
		for scope, reqs := range scopes {
			t.Errorf("shipped scope %s:%q (%d requirements): the shipped policy must not trust anything", transport, scope, len(reqs))
		}
	}

	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	reg, err := registry.Start(registry.Options{Dir: filepath.Join(dir, "registry")})
	if err != nil {
		t.Fatalf("starting the registry: %v", err)
	}
	t.Cleanup(func() {
		if err := reg.Close(); err != nil {
			t.Errorf("closing the registry: %v", err)
		}
	})
	keys, err := osimage.GenerateKeys(filepath.Join(dir, "keys"), "pass")
	if err != nil {
		t.Fatal(err)
	}
	// registries.conf/registries.d of a host that trusts nothing special but reads sigstore
	// attachments; only the policy is the shipped one.
	trust, err := osimage.WriteTrust(filepath.Join(dir, "trust"), reg.Addr(), keys)
	if err != nil {
		t.Fatal(err)
	}
	b := &osimage.Builder{Registry: reg.Addr()}
	ctx := context.Background()
	unsigned, err := b.Base(ctx, osimage.Spec{Repo: "os/base", Tag: "unsigned", Version: "1"})
	if err != nil {
		t.Fatal(err)
	}
	signed, err := b.Base(ctx, osimage.Spec{Repo: "os/base", Tag: "signed", Version: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if err := osimage.Sign(ctx, signed.Pinned, keys); err != nil {
		t.Fatal(err)
	}
	c, err := image.New(image.Options{
		RegistriesConfPath: trust.RegistriesConfPath, RegistriesConfDir: trust.RegistriesConfDir,
		RegistriesDDir: trust.RegistriesDDir, PolicyPath: policyPath, BlobInfoCacheDir: trust.BlobInfoCacheDir,
		OS: "linux", Arch: "amd64", Logger: zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, img := range map[string]*osimage.Image{"unsigned": unsigned, "signed_by_a_key_nobody_trusted": signed} {
		t.Run("rejects_an_image_"+name, func(t *testing.T) {
			r, err := c.Resolve(ctx, img.Pinned)
			if err != nil {
				t.Fatalf("resolve: %v", err)
			}
			v, err := c.Verify(ctx, r)
			if code, _ := reason.Of(err); code != reason.SignatureRejected {
				t.Fatalf("verify = %+v, %v; want %s", v, err, reason.SignatureRejected)
			}
		})
	}
}
