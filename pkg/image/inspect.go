package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	digest "github.com/opencontainers/go-digest"

	"layerd.dev/layerd/pkg/reason"
)

// ReportSchemaVersion is the version of the Report JSON (docs/image.md).
const ReportSchemaVersion = 1

// Report is the outcome of Inspect and the `layerd image inspect --json` document. Fields that
// were not reached before a failure are empty.
type Report struct {
	SchemaVersion  int               `json:"schemaVersion"`
	Input          string            `json:"input"`
	Reference      string            `json:"reference,omitempty"`
	Repository     string            `json:"repository,omitempty"`
	Pinned         string            `json:"pinned,omitempty"`
	ManifestDigest digest.Digest     `json:"manifestDigest,omitempty"`
	IndexDigest    digest.Digest     `json:"indexDigest,omitempty"`
	Platform       *Platform         `json:"platform,omitempty"`
	Version        string            `json:"version,omitempty"`
	Labels         map[string]string `json:"labels,omitempty"`
	Bootable       string            `json:"bootable,omitempty"`
	Size           int64             `json:"size,omitempty"`
	Layers         int               `json:"layers,omitempty"`
	ConfigDigest   digest.Digest     `json:"configDigest,omitempty"`
	Signature      *Verdict          `json:"signature,omitempty"`
	// Accepted is true only when resolve, verify and validate all passed.
	Accepted bool        `json:"accepted"`
	Reason   reason.Code `json:"reason,omitempty"`
	Message  string      `json:"message,omitempty"`
}

// Inspect runs Resolve, Verify and Validate in that order and stops at the first failure (the
// config of an image the policy rejected is never read). The Report is always non-nil.
func (c *Client) Inspect(ctx context.Context, ref string) (*Report, error) {
	rep := &Report{SchemaVersion: ReportSchemaVersion, Input: ref}
	r, err := c.Resolve(ctx, ref)
	if err != nil {
		return rep.fail(err)
	}
	rep.Reference, rep.Repository, rep.Pinned = r.Name, r.Repo, r.Pinned
	rep.ManifestDigest, rep.IndexDigest = r.ManifestDigest, r.IndexDigest
	if r.Platform != (Platform{}) {
		p := r.Platform
		rep.Platform = &p
	}
	v, err := c.Verify(ctx, r)
	rep.Signature = v
	if err != nil {
		return rep.fail(err)
	}
	info, err := c.Validate(ctx, r)
	if info != nil {
		p := info.Platform
		rep.Platform = &p
		rep.Version, rep.Labels, rep.Bootable = info.Version, info.Labels, info.Bootable
		rep.Size, rep.Layers, rep.ConfigDigest = info.Size, info.Layers, info.ConfigDigest
	}
	if err != nil {
		return rep.fail(err)
	}
	rep.Accepted = true
	return rep, nil
}

func (rep *Report) fail(err error) (*Report, error) {
	var ie *Error
	if !errors.As(err, &ie) {
		ie = newError(reason.RegistryUnavailable, rep.Input, err)
	}
	rep.Reason, rep.Message = ie.Code, ie.Error()
	return rep, ie
}

// WriteText prints the report for people, one "key: value" per line.
func (rep *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(&b, "%-16s %s\n", k+":", v)
		}
	}
	line("image", rep.Input)
	line("pinned", rep.Pinned)
	line("manifest digest", rep.ManifestDigest.String())
	line("index digest", rep.IndexDigest.String())
	if rep.Platform != nil {
		line("platform", rep.Platform.String())
	}
	line("version", rep.Version)
	line("bootable", rep.Bootable)
	if rep.Size > 0 {
		line("size", fmt.Sprintf("%d bytes in %d layers", rep.Size, rep.Layers))
	}
	if v := rep.Signature; v != nil {
		verdict := "rejected"
		if v.Accepted {
			verdict = "accepted"
			if v.Signed != "" {
				verdict += fmt.Sprintf(" (signature on the %s %s)", v.Signed, v.SignedDigest)
			} else {
				verdict += " (no signature required)"
			}
		}
		line("signature", verdict)
		line("policy scope", fmt.Sprintf("%s %s", v.Scope, v.Requirements))
	}
	keys := make([]string, 0, len(rep.Labels))
	for k := range rep.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		line("label", k+"="+rep.Labels[k])
	}
	if rep.Accepted {
		line("result", "accepted")
	} else {
		line("result", "rejected: "+string(rep.Reason))
		line("message", rep.Message)
	}
	_, err := io.WriteString(w, b.String())
	return err
}
