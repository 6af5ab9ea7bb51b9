package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	digest "github.com/opencontainers/go-digest"
	"go.podman.io/image/v5/docker"
	"go.podman.io/image/v5/docker/reference"
	"go.podman.io/image/v5/image"
	"go.podman.io/image/v5/manifest"
	"go.podman.io/image/v5/signature"
	"go.podman.io/image/v5/types"
	"go.uber.org/zap"

	"layerd.dev/layerd/pkg/reason"
)

// Verdict is the outcome of evaluating the signature policy.
type Verdict struct {
	// Accepted is true when the policy admits the pinned image.
	Accepted bool `json:"accepted"`
	// Scope is the policy.json section that applied: `docker:<scope>`, `docker:""` (the
	// transport default) or `default`.
	Scope string `json:"scope"`
	// Requirements is that section as JSON, e.g. [{"type":"sigstoreSigned","keyPath":…}].
	Requirements json.RawMessage `json:"requirements,omitempty"`
	// Types lists the requirement types, e.g. ["sigstoreSigned"].
	Types []string `json:"types"`
	// Signed says what the accepted signature covered: "index", "manifest", or "" when the
	// policy required no signature.
	Signed string `json:"signed,omitempty"`
	// SignedDigest is the digest that accepted signature covers.
	SignedDigest digest.Digest `json:"signedDigest,omitempty"`
	// Message is the policy's rejection reason when not accepted.
	Message string `json:"message,omitempty"`
}

// Verify evaluates policy.json (+ registries.d for where signatures live) against r.Pinned with
// containers/image semantics (signature.PolicyContext.IsRunningImageAllowed).
//
// For a multi-arch image two consumers of go.podman.io/image disagree: copy.Image (podman pull)
// checks the chosen per-arch instance's signatures, while the image proxy that ostree-ext,
// rpm-ostree and bootc pull through checks the top-level index. Signers differ too: `cosign sign`
// signs the index only, `cosign sign --recursive` and `skopeo copy --all --sign-by-sigstore`
// sign both. Verify accepts the image when the policy accepts either the index (whose
// digest-verified content lists r.ManifestDigest) or the per-arch manifest, and reports which.
// A verdict is returned with a rejection too; the error is then a SignatureRejected *Error.
func (c *Client) Verify(ctx context.Context, r *Resolved) (*Verdict, error) {
	if r == nil || r.Repo == "" || r.ManifestDigest == "" {
		return nil, newError(reason.InvalidReference, "", errNilResolved)
	}
	img := r.Pinned
	if img == "" {
		img = r.Repo + "@" + r.ManifestDigest.String()
	}
	top := r.ManifestDigest
	if r.IndexDigest != "" {
		top = r.IndexDigest
	}
	named, err := pinnedRef(r.Repo, top)
	if err != nil {
		return nil, newError(reason.InvalidReference, img, err)
	}
	sys := c.opts.systemContext()
	policy, err := c.loadPolicy(sys)
	if err != nil {
		return nil, newError(reason.SignatureRejected, img, err)
	}
	v, err := describeScope(policy, named)
	if err != nil {
		return nil, newError(reason.InvalidReference, img, err)
	}
	err = c.retry(ctx, img, reason.SignatureRejected, func(ctx context.Context) error {
		return c.verifyOnce(ctx, sys, policy, named, r, v)
	})
	if err != nil {
		var ie *Error
		if errors.As(err, &ie) && ie.Code == reason.SignatureRejected {
			v.Accepted = false
			v.Message = oneLine(ie.Err.Error())
		}
		return v, err
	}
	c.log.Debug("signature policy accepted", zap.String("image", img), zap.String("scope", v.Scope),
		zap.String("signed", v.Signed), zap.String("digest", v.SignedDigest.String()))
	return v, nil
}

// loadPolicy reads Options.PolicyPath (sys.SignaturePolicyPath), or the default policy.json.
func (c *Client) loadPolicy(sys *types.SystemContext) (*signature.Policy, error) {
	p, err := signature.DefaultPolicy(sys)
	if err != nil {
		return nil, fmt.Errorf("loading signature policy: %w", err)
	}
	return p, nil
}

// verifyOnce is one attempt: open the source at the top-level digest, check the index lists the
// per-arch manifest, then ask the policy about the index and (if needed) the instance.
func (c *Client) verifyOnce(ctx context.Context, sys *types.SystemContext, policy *signature.Policy,
	named reference.Named, r *Resolved, v *Verdict,
) error {
	src, err := openSource(ctx, sys, named)
	if err != nil {
		return err
	}
	defer src.Close()
	topImg := image.UnparsedInstance(src, nil)
	raw, mime, err := topImg.Manifest(ctx) // checks the bytes against the pinned digest
	if err != nil {
		return c.manifestError(ctx, src, r.Pinned, named, err)
	}
	pc := &policyCheck{policy: policy, sys: sys, named: named, multi: r.IndexDigest != "", v: v}
	if !pc.multi {
		return pc.allowed(ctx, topImg, r.ManifestDigest, "manifest")
	}
	if err := indexLists(raw, mime, r.ManifestDigest); err != nil {
		return newError(reason.DigestMismatch, r.Pinned, err)
	}
	indexErr := pc.allowed(ctx, topImg, r.IndexDigest, "index")
	if indexErr == nil || classify(indexErr, reason.SignatureRejected).code != reason.SignatureRejected {
		return indexErr
	}
	instErr := pc.allowed(ctx, image.UnparsedInstance(src, &r.ManifestDigest), r.ManifestDigest, "manifest")
	if instErr == nil || classify(instErr, reason.SignatureRejected).code != reason.SignatureRejected {
		return instErr
	}
	return newError(reason.SignatureRejected, r.Pinned, fmt.Errorf("%w; %w", indexErr, instErr))
}

// policyCheck evaluates one policy against the images of one Verify call.
type policyCheck struct {
	policy *signature.Policy
	sys    *types.SystemContext
	named  reference.Named
	multi  bool // an index: name what each rejection is about
	v      *Verdict
}

// allowed runs IsRunningImageAllowed on one UnparsedImage and fills the verdict on success.
func (p *policyCheck) allowed(ctx context.Context, img types.UnparsedImage, d digest.Digest, kind string) error {
	pc, err := signature.NewPolicyContext(p.policy)
	if err != nil {
		return signature.PolicyRequirementError("creating policy context: " + err.Error())
	}
	ok, err := pc.IsRunningImageAllowed(ctx, img)
	if derr := pc.Destroy(); derr != nil && err == nil {
		err = derr
	}
	if err == nil && !ok {
		err = errors.New("policy evaluation returned false without a reason")
	}
	if err != nil {
		if classify(err, reason.SignatureRejected).code != reason.SignatureRejected {
			return err
		}
		if p.multi {
			err = fmt.Errorf("%s %s: %w", kind, d, err)
		}
		return fmt.Errorf("%w%s", err, p.hint(err))
	}
	p.v.Accepted = true
	if verifiesSignatures(p.v.Types) {
		p.v.Signed, p.v.SignedDigest = kind, d
	}
	return nil
}

// hint explains the silent misconfiguration seen most often: a sigstoreSigned policy while
// registries.d does not enable sigstore attachments for the registry.
func (p *policyCheck) hint(err error) string {
	if !strings.Contains(err.Error(), "no signature exists") || !slices.Contains(p.v.Types, "sigstoreSigned") {
		return ""
	}
	ref, rerr := docker.NewReference(p.named)
	if rerr != nil {
		return ""
	}
	on, rerr := sigstoreAttachmentsEnabled(p.sys, ref)
	switch {
	case rerr != nil:
		return fmt.Sprintf(" (reading registries.d: %v)", rerr)
	case !on:
		return " (registries.d does not set use-sigstore-attachments: true for this registry, so sigstore signatures are not looked up)"
	}
	return ""
}

func verifiesSignatures(types []string) bool {
	return slices.Contains(types, "signedBy") || slices.Contains(types, "sigstoreSigned")
}

// manifestError turns a failed digest-pinned manifest read into DigestMismatch when the registry
// served bytes that do not hash to the pin, else classifies the original error.
func (c *Client) manifestError(ctx context.Context, src types.ImageSource, img string, named reference.Named, err error) error {
	d, ok := named.(reference.Digested)
	if !ok {
		return err
	}
	raw, _, ferr := src.GetManifest(ctx, nil)
	if ferr != nil {
		return err
	}
	if mErr := checkManifestDigest(img, raw, d.Digest()); mErr != nil {
		return mErr
	}
	return err
}

// indexLists checks that the (digest-verified) index names instance.
func indexLists(raw []byte, mime string, instance digest.Digest) error {
	if !manifest.MIMETypeIsMultiImage(manifest.NormalizedMIMEType(mime)) {
		return fmt.Errorf("expected an index, registry served %s", mime)
	}
	list, err := manifest.ListFromBlob(raw, manifest.NormalizedMIMEType(mime))
	if err != nil {
		return fmt.Errorf("parsing index: %w", err)
	}
	if _, err := list.Instance(instance); err != nil {
		return fmt.Errorf("index does not list manifest %s", instance)
	}
	return nil
}

// describeScope finds the policy.json section that applies to named, the same lookup as
// signature.PolicyContext (identity, then parent namespaces, then "", then default).
func describeScope(policy *signature.Policy, named reference.Named) (*Verdict, error) {
	ref, err := docker.NewReference(named)
	if err != nil {
		return nil, err
	}
	scope, reqs := "default", policy.Default
	if scopes, ok := policy.Transports[docker.Transport.Name()]; ok {
		found := false
		for _, name := range append([]string{ref.PolicyConfigurationIdentity()}, ref.PolicyConfigurationNamespaces()...) {
			if r, ok := scopes[name]; ok {
				scope, reqs, found = "docker:"+name, r, true
				break
			}
		}
		if r, ok := scopes[""]; ok && !found {
			scope, reqs = `docker:""`, r
		}
	}
	raw, err := json.Marshal(reqs)
	if err != nil {
		return nil, fmt.Errorf("describing policy requirements: %w", err)
	}
	var typed []struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(raw, &typed); err != nil {
		return nil, fmt.Errorf("describing policy requirements: %w", err)
	}
	v := &Verdict{Scope: scope, Requirements: raw, Types: []string{}}
	for _, t := range typed {
		v.Types = append(v.Types, t.Type)
	}
	return v, nil
}
