package image

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/pkg/sysregistriesv2"
	"go.podman.io/image/v5/types"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/reason"
)

// ParseReference parses what a user may write as an image: a registry reference with a tag or a
// digest, optionally prefixed by "docker://". A missing tag means ":latest"; with both a tag and
// a digest the digest wins. It does not resolve short names (see Client.Resolve): the result for
// "fcos:41" is only syntactically checked and isShort reports it.
func ParseReference(s string) (named reference.Named, isShort bool, err error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return nil, false, errors.New("empty image reference")
	}
	if rest, ok := strings.CutPrefix(in, "docker://"); ok {
		in = rest
	} else if i := strings.Index(in, ":"); i > 0 && !strings.ContainsAny(in[:i], "/.@") && strings.HasPrefix(in[i+1:], "/") {
		return nil, false, fmt.Errorf("transport %q is not supported, use a registry reference (docker://)", in[:i])
	} else if t, rest, ok := strings.Cut(in, ":"); ok && knownTransport(t) && !tagRE.MatchString(rest) {
		return nil, false, fmt.Errorf("transport %q is not supported, use a registry reference (docker://)", t)
	}
	if _, err := digest.Parse(in); err == nil {
		return nil, false, fmt.Errorf("%q is a bare digest; prefix it with registry/repository@", s)
	}
	ref, err := reference.Parse(in)
	if err != nil {
		return nil, false, fmt.Errorf("parsing %q: %w", s, err)
	}
	n, ok := ref.(reference.Named)
	if !ok {
		return nil, false, fmt.Errorf("%q has no repository name", s)
	}
	isShort = !hasDomain(n.Name())
	if !isShort {
		// Canonicalise (e.g. docker.io/fedora → docker.io/library/fedora) the way the transport will.
		if n, err = reference.ParseNormalizedNamed(in); err != nil {
			return nil, false, fmt.Errorf("parsing %q: %w", s, err)
		}
	}
	if d, ok := n.(reference.Digested); ok {
		if err := d.Digest().Validate(); err != nil {
			return nil, false, fmt.Errorf("parsing %q: %w", s, err)
		}
		if n, err = reference.WithDigest(reference.TrimNamed(n), d.Digest()); err != nil {
			return nil, false, fmt.Errorf("parsing %q: %w", s, err)
		}
		return n, isShort, nil
	}
	return reference.TagNameOnly(n), isShort, nil
}

// tagRE is the docker tag grammar; "name:tag" is a short name even when name is a transport.
var tagRE = regexp.MustCompile(`^[\w][\w.-]{0,127}$`)

// knownTransport lists go.podman.io/image transports whose syntax is "name:details".
func knownTransport(t string) bool {
	switch t {
	case "oci", "oci-archive", "docker-archive", "docker-daemon", "containers-storage", "dir", "sif", "tarball",
		"ostree", "ostree-unverified-registry", "ostree-unverified-image", "ostree-remote-image", "ostree-remote-registry",
		"ostree-image-signed", "registry":
		return true
	}
	return false
}

// hasDomain applies the registry rule: the first path component is a registry when it contains
// a dot or a port, or is "localhost".
func hasDomain(name string) bool {
	first, _, ok := strings.Cut(name, "/")
	if !ok {
		return false
	}
	return strings.ContainsAny(first, ".:") || first == "localhost"
}

// qualify parses input and resolves a short name through registries.conf: an alias wins; else
// exactly one unqualified-search registry is used. Several candidates are refused: an agent
// cannot prompt, and trying them in order lets whoever registers the name first win.
func (c *Client) qualify(sys *types.SystemContext, input string) (reference.Named, error) {
	named, isShort, err := ParseReference(input)
	if err != nil {
		return nil, newError(reason.InvalidReference, input, err)
	}
	if !isShort {
		return named, nil
	}
	repo := reference.TrimNamed(named).Name()
	alias, origin, err := sysregistriesv2.ResolveShortNameAlias(sys, repo)
	if err != nil {
		return nil, newError(reason.InvalidReference, input, fmt.Errorf("short-name alias lookup: %w", err))
	}
	var target reference.Named
	switch {
	case alias != nil:
		target = alias
	default:
		regs, where, err := sysregistriesv2.UnqualifiedSearchRegistriesWithOrigin(sys)
		if err != nil {
			return nil, newError(reason.InvalidReference, input, fmt.Errorf("reading unqualified-search-registries: %w", err))
		}
		if len(regs) != 1 {
			return nil, newError(reason.InvalidReference, input, fmt.Errorf(
				"short name has no alias and %d unqualified-search registries %v in %s; use a fully qualified reference",
				len(regs), regs, where))
		}
		if target, err = reference.ParseNormalizedNamed(regs[0] + "/" + repo); err != nil {
			return nil, newError(reason.InvalidReference, input, err)
		}
		origin = where
	}
	out, err := reattach(target, named)
	if err != nil {
		return nil, newError(reason.InvalidReference, input, err)
	}
	c.log.Debug("resolved short name", zap.String("image", input), zap.String("to", out.String()), zap.String("from", origin))
	return out, nil
}

// reattach puts from's tag or digest on repo.
func reattach(repo, from reference.Named) (reference.Named, error) {
	repo = reference.TrimNamed(repo)
	if d, ok := from.(reference.Digested); ok {
		return reference.WithDigest(repo, d.Digest())
	}
	if t, ok := from.(reference.Tagged); ok {
		return reference.WithTag(repo, t.Tag())
	}
	return reference.TagNameOnly(repo), nil
}

// checkBlocked refuses a registry marked blocked in registries.conf, before any network access.
func checkBlocked(sys *types.SystemContext, input string, named reference.Named) error {
	reg, err := sysregistriesv2.FindRegistry(sys, named.Name())
	if err != nil {
		return newError(reason.RegistryUnavailable, input, fmt.Errorf("reading registries.conf (%s): %w",
			sysregistriesv2.ConfigurationSourceDescription(sys), err))
	}
	if reg != nil && reg.Blocked {
		return newError(reason.RegistryBlocked, input, fmt.Errorf("registry %s is blocked in %s", reg.Prefix,
			sysregistriesv2.ConfigurationSourceDescription(sys)))
	}
	return nil
}
