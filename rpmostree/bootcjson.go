package rpmostree

import (
	"encoding/json"
	"time"
)

// BootcHost is a `bootc status --format=json` compatible view of a Status (reference §12.2),
// for `layerd status --json`. Field names follow bootc's where they overlap.
type BootcHost struct {
	APIVersion string        `json:"apiVersion"`
	Kind       string        `json:"kind"`
	Metadata   BootcMetadata `json:"metadata"`
	Spec       BootcSpec     `json:"spec"`
	Status     BootcStatus   `json:"status"`
}

// BootcMetadata is the metadata of a BootcHost.
type BootcMetadata struct {
	Name string `json:"name"`
}

// BootcSpec is the desired state: the default deployment's image.
type BootcSpec struct {
	Image     *BootcImageReference `json:"image"`
	BootOrder string               `json:"bootOrder"`
}

// BootcStatus holds the boot entries.
type BootcStatus struct {
	Staged           *BootcBootEntry  `json:"staged"`
	Booted           *BootcBootEntry  `json:"booted"`
	Rollback         *BootcBootEntry  `json:"rollback"`
	RollbackQueued   bool             `json:"rollbackQueued"`
	Type             *string          `json:"type"`
	OtherDeployments []BootcBootEntry `json:"otherDeployments"`
	UsrOverlay       any              `json:"usrOverlay"`
}

// BootcBootEntry is one deployment.
type BootcBootEntry struct {
	Image             *BootcImageStatus `json:"image"`
	CachedUpdate      *BootcImageStatus `json:"cachedUpdate"`
	Incompatible      bool              `json:"incompatible"`
	Pinned            bool              `json:"pinned"`
	DownloadOnly      bool              `json:"downloadOnly"`
	SoftRebootCapable bool              `json:"softRebootCapable"`
	Store             *string           `json:"store"`
	Ostree            *BootcOstree      `json:"ostree"`
	Composefs         any               `json:"composefs"`
}

// BootcImageStatus describes the image of a deployment.
type BootcImageStatus struct {
	Image        BootcImageReference `json:"image"`
	Version      *string             `json:"version"`
	Timestamp    *string             `json:"timestamp"`
	ImageDigest  string              `json:"imageDigest"`
	Architecture string              `json:"architecture,omitempty"`
}

// BootcImageReference is an image and how it is fetched and verified.
type BootcImageReference struct {
	Image     string          `json:"image"`
	Transport string          `json:"transport"`
	Signature *BootcSignature `json:"signature,omitempty"`
}

// BootcSignature is "containerPolicy" or {"ostreeRemote": name}; nil means insecure.
type BootcSignature struct {
	ContainerPolicy bool
	OstreeRemote    string
}

// MarshalJSON writes bootc's encoding of the signature source.
func (s BootcSignature) MarshalJSON() ([]byte, error) {
	if s.ContainerPolicy {
		return json.Marshal("containerPolicy")
	}
	return json.Marshal(map[string]string{"ostreeRemote": s.OstreeRemote})
}

// BootcOstree is the ostree identity of a deployment.
type BootcOstree struct {
	Checksum     string `json:"checksum"`
	DeploySerial int32  `json:"deploySerial"`
	Stateroot    string `json:"stateroot"`
}

// ToBootcHost converts a Status. A pending (non-staged) deployment ahead of the booted one,
// which is what Rollback leaves behind, is reported as rollbackQueued.
func ToBootcHost(st *Status) BootcHost {
	h := BootcHost{
		APIVersion: "org.containers.bootc/v1",
		Kind:       "BootcHost",
		Metadata:   BootcMetadata{Name: "host"},
		Spec:       BootcSpec{BootOrder: "default"},
		Status:     BootcStatus{OtherDeployments: []BootcBootEntry{}},
	}
	if st == nil {
		return h
	}
	h.Status.Staged = bootEntry(st.Staged)
	h.Status.Booted = bootEntry(st.Booted)
	h.Status.Rollback = bootEntry(st.Rollback)
	if st.Default != nil && st.Booted != nil && st.Default.ID != st.Booted.ID && !st.Default.Staged {
		h.Status.RollbackQueued = true
		h.Spec.BootOrder = "rollback"
	}
	if h.Status.Booted != nil && h.Status.Booted.Image != nil {
		t := "bootcHost"
		h.Status.Type = &t
	}
	if e := bootEntry(st.Default); e != nil && e.Image != nil {
		ref := e.Image.Image
		h.Spec.Image = &ref
	}
	shown := map[string]bool{}
	for _, d := range []*Deployment{st.Staged, st.Booted, st.Rollback} {
		if d != nil {
			shown[d.ID] = true
		}
	}
	for i := range st.Deployments {
		if d := &st.Deployments[i]; !shown[d.ID] {
			h.Status.OtherDeployments = append(h.Status.OtherDeployments, *bootEntry(d))
		}
	}
	return h
}

func bootEntry(d *Deployment) *BootcBootEntry {
	if d == nil {
		return nil
	}
	store := "ostreeContainer"
	return &BootcBootEntry{
		Image:        imageStatus(d),
		Incompatible: len(d.Packages) > 0 || len(d.RequestedPackages) > 0,
		Pinned:       d.Pinned,
		Store:        &store,
		Ostree:       &BootcOstree{Checksum: d.Checksum, DeploySerial: d.Serial, Stateroot: d.OSName},
	}
}

func imageStatus(d *Deployment) *BootcImageStatus {
	ref, ok := ParseImageRefspec(d.ContainerImageReference)
	if !ok {
		return nil
	}
	img := &BootcImageStatus{
		Image:        BootcImageReference{Image: ref.Image, Transport: ref.Transport},
		ImageDigest:  d.ContainerImageReferenceDigest,
		Architecture: imageArchitecture(d),
	}
	switch ref.Signature {
	case "containerPolicy":
		img.Image.Signature = &BootcSignature{ContainerPolicy: true}
	case "ostreeRemote":
		img.Image.Signature = &BootcSignature{OstreeRemote: ref.Remote}
	}
	if d.Version != "" {
		v := d.Version
		img.Version = &v
	}
	if d.Timestamp > 0 {
		ts := time.Unix(int64(d.Timestamp), 0).UTC().Format(time.RFC3339)
		img.Timestamp = &ts
	}
	return img
}

// imageArchitecture reads the architecture from the image config kept in the commit metadata
// (ostree.container.image-config, a JSON string), when present.
func imageArchitecture(d *Deployment) string {
	v, ok := d.BaseCommitMeta["ostree.container.image-config"]
	if !ok {
		return ""
	}
	s, ok := v.Value().(string)
	if !ok {
		return ""
	}
	var cfg struct {
		Architecture string `json:"architecture"`
	}
	if json.Unmarshal([]byte(s), &cfg) != nil {
		return ""
	}
	return cfg.Architecture
}
