package ostreesys

import (
	"bufio"
	"bytes"
	"sort"
	"strings"
)

// Origin keys and groups as written by libostree and rpm-ostree.
const (
	OriginGroup             = "origin"
	KeyRefspec              = "refspec"
	KeyContainerImageRef    = "container-image-reference"
	TransientGroup          = "libostree-transient"
	KeyPinned               = "pinned"
	ContainerRefPrefixUnver = "ostree-unverified-registry:"
)

// Origin is a deployment's origin keyfile. rpm-ostree records a container
// deployment as `[origin] container-image-reference=ostree-unverified-registry:…`;
// plain ostree records `[origin] refspec=…`. Pinning lives in
// `[libostree-transient] pinned=true`.
type Origin struct {
	Refspec                 string
	ContainerImageReference string
	Pinned                  bool
	// Extra holds every other group/key, preserved by Marshal.
	Extra map[string]map[string]string
}

// ParseOrigin parses a GKeyFile-style origin file (comments and unknown
// groups are kept in Extra; value escapes are not interpreted).
func ParseOrigin(data []byte) Origin {
	var o Origin
	group := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
			continue
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			group = line[1 : len(line)-1]
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch {
		case group == OriginGroup && k == KeyRefspec:
			o.Refspec = v
		case group == OriginGroup && k == KeyContainerImageRef:
			o.ContainerImageReference = v
		case group == TransientGroup && k == KeyPinned:
			o.Pinned = v == "true"
		default:
			if o.Extra == nil {
				o.Extra = map[string]map[string]string{}
			}
			if o.Extra[group] == nil {
				o.Extra[group] = map[string]string{}
			}
			o.Extra[group][k] = v
		}
	}
	return o
}

// Marshal renders the origin as a keyfile, [origin] first.
func (o Origin) Marshal() []byte {
	groups := map[string]map[string]string{}
	for g, kv := range o.Extra {
		groups[g] = map[string]string{}
		for k, v := range kv {
			groups[g][k] = v
		}
	}
	set := func(g, k, v string) {
		if groups[g] == nil {
			groups[g] = map[string]string{}
		}
		groups[g][k] = v
	}
	if o.Refspec != "" {
		set(OriginGroup, KeyRefspec, o.Refspec)
	}
	if o.ContainerImageReference != "" {
		set(OriginGroup, KeyContainerImageRef, o.ContainerImageReference)
	}
	if o.Pinned {
		set(TransientGroup, KeyPinned, "true")
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		if g != OriginGroup {
			names = append(names, g)
		}
	}
	sort.Strings(names)
	if groups[OriginGroup] != nil {
		names = append([]string{OriginGroup}, names...)
	}
	var b bytes.Buffer
	for i, g := range names {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("[" + g + "]\n")
		keys := make([]string, 0, len(groups[g]))
		for k := range groups[g] {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			b.WriteString(k + "=" + groups[g][k] + "\n")
		}
	}
	return b.Bytes()
}

// ContainerOrigin is the origin rpm-ostree writes after
// `rpm-ostree rebase ostree-unverified-registry:<imageRef>`.
func ContainerOrigin(imageRef string) Origin {
	return Origin{ContainerImageReference: ContainerRefPrefixUnver + imageRef}
}
