package rpmostree

import (
	"fmt"
	"strings"
)

const unverifiedRegistry = "ostree-unverified-registry:"

// ContainerRefspec turns a digest-pinned image reference (repo@sha256:<64 hex>, optionally
// with a docker:// prefix) into the refspec layerd stages: ostree-unverified-registry:repo@sha256:…
// (layerd has already verified exactly that digest). A refspec already in that form is returned
// as is; a tag-only reference is an error.
func ContainerRefspec(pinnedRef string) (string, error) {
	ref := strings.TrimPrefix(pinnedRef, unverifiedRegistry)
	ref = strings.TrimPrefix(ref, "docker://")
	repo, digest, ok := strings.Cut(ref, "@")
	if !ok || repo == "" || strings.ContainsAny(repo, " \t\n@") {
		return "", fmt.Errorf("image reference %q is not pinned as repo@sha256:<digest>", pinnedRef)
	}
	if !validDigest(digest) {
		return "", fmt.Errorf("image reference %q: %q is not a sha256 digest", pinnedRef, digest)
	}
	return unverifiedRegistry + repo + "@" + digest, nil
}

// DigestOf returns the sha256:… digest of a pinned reference or refspec ("" if not pinned).
func DigestOf(ref string) string {
	i := strings.LastIndex(ref, "@")
	if i < 0 || !validDigest(ref[i+1:]) {
		return ""
	}
	return ref[i+1:]
}

func validDigest(d string) bool {
	hex, ok := strings.CutPrefix(d, "sha256:")
	if !ok || len(hex) != 64 {
		return false
	}
	for _, c := range hex {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ImageRef is a container refspec split into its parts (reference §9.1).
type ImageRef struct {
	// Transport is registry, oci, oci-archive, docker-archive, containers-storage or dir.
	Transport string
	// Image is the name within the transport, e.g. quay.io/org/img@sha256:….
	Image string
	// Signature is "" (none requested), "containerPolicy", or "ostreeRemote".
	Signature string
	// Remote is the ostree remote for Signature "ostreeRemote".
	Remote string
}

// ParseImageRefspec splits an ostree container refspec; ok is false for ostree refs.
func ParseImageRefspec(refspec string) (ImageRef, bool) {
	s := strings.TrimPrefix(refspec, "ostree://")
	prefix, rest, found := strings.Cut(s, ":")
	if !found {
		return ImageRef{}, false
	}
	var r ImageRef
	switch prefix {
	case "ostree-unverified-registry":
		r.Transport, r.Image = "registry", rest
		return r, rest != ""
	case "ostree-unverified-image":
	case "ostree-image-signed":
		r.Signature = "containerPolicy"
	case "ostree-remote-registry":
		r.Signature = "ostreeRemote"
		remote, image, ok := strings.Cut(rest, ":")
		r.Remote, r.Transport, r.Image = remote, "registry", image
		return r, ok && image != ""
	case "ostree-remote-image":
		r.Signature = "ostreeRemote"
		remote, after, ok := strings.Cut(rest, ":")
		if !ok {
			return ImageRef{}, false
		}
		r.Remote, rest = remote, after
	default:
		return ImageRef{}, false
	}
	transport, image, ok := splitTransport(rest)
	r.Transport, r.Image = transport, image
	return r, ok
}

func splitTransport(s string) (transport, image string, ok bool) {
	if image, ok := strings.CutPrefix(s, "docker://"); ok {
		return "registry", image, image != ""
	}
	transport, image, ok = strings.Cut(s, ":")
	if !ok || image == "" {
		return "", "", false
	}
	switch transport {
	case "registry", "oci", "oci-archive", "docker-archive", "containers-storage", "dir":
		return transport, image, true
	}
	return "", "", false
}
