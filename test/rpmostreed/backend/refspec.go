package backend

import (
	"errors"
	"fmt"
	"strings"

	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/oci/layout"
	"go.podman.io/image/v5/types"
)

// Signature verification modes of a container refspec (ostree-ext's
// SignatureSource).
type sigVerify int

const (
	// sigPolicyAllowInsecure is ostree-unverified-image / -registry: no
	// signature is required (the pull runs with an insecure policy).
	sigPolicyAllowInsecure sigVerify = iota
	// sigPolicy is ostree-image-signed: containers-policy.json is enforced
	// and a default of insecureAcceptAnything is refused.
	sigPolicy
	// sigOstreeRemote is ostree-remote-image / -registry: verification by an
	// ostree remote's signing configuration (not supported by the stand-in).
	sigOstreeRemote
)

// containerRef is a parsed container refspec (ostree-ext's
// OstreeImageReference).
type containerRef struct {
	Refspec   string // as given (after stripping a legacy ostree://)
	SigVerify sigVerify
	Remote    string // the ostree remote of sigOstreeRemote
	Transport string // "registry", "oci", "oci-archive", "docker-archive", "containers-storage", "dir"
	Name      string // the image name within the transport
}

// containerPrefixes are the schemes that make a refspec a container image.
var containerPrefixes = []string{
	"ostree-unverified-registry:", "ostree-unverified-image:", "ostree-image-signed:",
	"ostree-remote-image:", "ostree-remote-registry:",
}

// isContainerRefspec reports whether rpm-ostree classifies s as a container
// image reference rather than an ostree ref or checksum.
func isContainerRefspec(s string) bool {
	s = strings.TrimPrefix(s, "ostree://")
	for _, p := range containerPrefixes {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// parseContainerRefspec parses a container refspec with ostree-ext's rules and
// error texts.
func parseContainerRefspec(value string) (containerRef, error) {
	value = strings.TrimPrefix(value, "ostree://")
	r := containerRef{Refspec: value}
	first, second, ok := strings.Cut(value, ":")
	if !ok {
		return r, fmt.Errorf("Missing ':' in %s", value)
	}
	var rest string
	switch first {
	case "ostree-image-signed":
		r.SigVerify, rest = sigPolicy, second
	case "ostree-unverified-image":
		r.SigVerify, rest = sigPolicyAllowInsecure, second
	case "ostree-unverified-registry":
		r.SigVerify, rest = sigPolicyAllowInsecure, "registry:"+second
	case "ostree-remote-registry", "ostree-remote-image":
		remote, tail, ok := strings.Cut(second, ":")
		if !ok {
			return r, fmt.Errorf("Missing second ':' in %s", value)
		}
		r.SigVerify, r.Remote, rest = sigOstreeRemote, remote, tail
		if first == "ostree-remote-registry" {
			rest = "registry:" + tail
		}
	default:
		return r, fmt.Errorf("Invalid ostree image reference scheme: %s", first)
	}
	transport, name, ok := strings.Cut(rest, ":")
	if !ok {
		return r, fmt.Errorf("Missing ':' in %s", rest)
	}
	switch transport {
	case "registry", "docker":
		r.Transport = "registry"
	case "oci", "oci-archive", "docker-archive", "containers-storage", "dir":
		r.Transport = transport
	default:
		return r, fmt.Errorf("Unknown transport '%s'", transport)
	}
	if name == "" {
		return r, fmt.Errorf("Invalid empty name in %s", rest)
	}
	if transport == "docker" {
		n, ok := strings.CutPrefix(name, "//")
		if !ok {
			return r, fmt.Errorf("Missing // in docker:// in %s", rest)
		}
		name = n
	}
	r.Name = name
	return r, nil
}

// errUnsupported marks refspecs the stand-in cannot serve (a real
// rpm-ostree would); the message says so plainly.
var errUnsupported = errors.New("not supported by the rpm-ostreed stand-in")

// imageReference resolves the refspec to a containers/image reference,
// optionally pinned to digest (a `set-revision` of sha256:…).
func (r containerRef) imageReference(pinDigest string) (types.ImageReference, error) {
	if r.SigVerify == sigOstreeRemote {
		return nil, fmt.Errorf("%s: ostree remote signature verification (remote %q) is %w", r.Refspec, r.Remote, errUnsupported)
	}
	switch r.Transport {
	case "registry":
		name := r.Name
		if pinDigest != "" {
			name = withDigest(name, pinDigest)
		}
		ref, err := docker.ParseReference("//" + name)
		if err != nil {
			return nil, fmt.Errorf("parse image reference %s: %w", name, err)
		}
		return ref, nil
	case "oci":
		if pinDigest != "" {
			return nil, fmt.Errorf("%s: a revision for an oci: image is %w", r.Refspec, errUnsupported)
		}
		ref, err := layout.ParseReference(r.Name)
		if err != nil {
			return nil, fmt.Errorf("parse image reference %s: %w", r.Name, err)
		}
		return ref, nil
	}
	return nil, fmt.Errorf("%s: transport %s is %w", r.Refspec, r.Transport, errUnsupported)
}

// withDigest replaces any tag or digest of a registry image name with @digest.
func withDigest(name, dgst string) string {
	if i := strings.Index(name, "@"); i >= 0 {
		name = name[:i]
	}
	slash := strings.LastIndex(name, "/")
	if colon := strings.LastIndex(name, ":"); colon > slash {
		name = name[:colon]
	}
	return name + "@" + dgst
}

// imageRefName is the ostree ref ostree-ext stores an imported image under:
// ostree/container/image/<escaped image reference>.
func imageRefName(r containerRef) string {
	return "ostree/container/image/" + escapeRef(r.Transport+":"+r.Name)
}

// escapeRef escapes a string into a valid ostree ref in the spirit of
// ostree-ext's refescape: ASCII letters and digits are kept, '/' is kept
// between non-empty components, '.' and '-' are kept inside a component, and
// every other byte becomes _XX_ (upper-case hex).
func escapeRef(s string) string {
	var b strings.Builder
	start := true // at the start of a ref component
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
			b.WriteByte(c)
		case (c == '.' || c == '-') && !start:
			b.WriteByte(c)
		case c == '/' && !start && i < len(s)-1:
			b.WriteByte('/')
			start = true
			continue
		default:
			fmt.Fprintf(&b, "_%02X_", c)
		}
		start = false
	}
	return b.String()
}
