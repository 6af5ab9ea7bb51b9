package image

import (
	"fmt"
	"io"

	"go.podman.io/image/v5/types"
	"go.podman.io/storage/pkg/configfile"
	"go.podman.io/storage/pkg/unshare"
	"go.yaml.in/yaml/v3"
)

// registriesDNamespace is the part of a registries.d entry layerd reads.
type registriesDNamespace struct {
	UseSigstoreAttachments *bool `yaml:"use-sigstore-attachments,omitempty"`
}

type registriesDFile struct {
	DefaultDocker *registriesDNamespace           `yaml:"default-docker"`
	Docker        map[string]registriesDNamespace `yaml:"docker"`
}

// sigstoreAttachmentsEnabled answers, with go.podman.io/image's own search path and precedence
// (identity, parent namespaces, default-docker), whether signatures for ref are looked up as
// sigstore attachments. Without it a sigstoreSigned policy silently finds "no signature".
func sigstoreAttachmentsEnabled(sys *types.SystemContext, ref types.ImageReference) (bool, error) {
	files := configfile.File{
		Name: "registries", Extension: "yaml", DoNotLoadMainFiles: true, DoNotUseExtensionForConfigName: true,
		UserId: unshare.GetRootlessUID(), CustomConfigFileDropInDirectory: sys.RegistriesDirPath,
	}
	merged := registriesDFile{Docker: map[string]registriesDNamespace{}}
	for item, err := range configfile.Read(&files) {
		if err != nil {
			return false, err
		}
		raw, err := io.ReadAll(item.Reader)
		if err != nil {
			return false, fmt.Errorf("reading %s: %w", item.Name, err)
		}
		var f registriesDFile
		if err := yaml.Unmarshal(raw, &f); err != nil {
			return false, fmt.Errorf("parsing %s: %w", item.Name, err)
		}
		if f.DefaultDocker != nil && merged.DefaultDocker == nil {
			merged.DefaultDocker = f.DefaultDocker
		}
		for k, v := range f.Docker {
			if _, dup := merged.Docker[k]; !dup {
				merged.Docker[k] = v
			}
		}
	}
	for _, name := range append([]string{ref.PolicyConfigurationIdentity()}, ref.PolicyConfigurationNamespaces()...) {
		if ns, ok := merged.Docker[name]; ok && ns.UseSigstoreAttachments != nil {
			return *ns.UseSigstoreAttachments, nil
		}
	}
	if merged.DefaultDocker != nil && merged.DefaultDocker.UseSigstoreAttachments != nil {
		return *merged.DefaultDocker.UseSigstoreAttachments, nil
	}
	return false, nil
}
