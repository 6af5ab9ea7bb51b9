package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/godbus/dbus/v5"

	"layerd.dev/layerd/test/rpmostreed/server"
)

// memBackend is an in-memory sysroot of one stateroot for protocol tests.
type memBackend struct {
	mu        sync.Mutex
	osname    string
	deps      []*memDeployment // boot order, staged first
	booted    int
	nextSer   int32
	stages    []server.StageRequest
	reboots   chan struct{}
	failStage error
}

var _ server.Backend = (*memBackend)(nil)

type memDeployment struct {
	checksum, refspec, digest string
	serial                    int32
	staged, locked            bool
}

func newMemBackend(bootedDigest string) *memBackend {
	b := &memBackend{osname: "fedora-coreos", reboots: make(chan struct{}, 8)}
	b.deps = []*memDeployment{b.newDeployment(bootedDigest)}
	return b
}

func (b *memBackend) newDeployment(digest string) *memDeployment {
	d := &memDeployment{
		checksum: fmt.Sprintf("%064x", b.nextSer+1),
		refspec:  "ostree-unverified-registry:127.0.0.1:5000/os@" + digest,
		digest:   digest, serial: b.nextSer,
	}
	b.nextSer++
	return d
}

func (d *memDeployment) dict(osname string, booted bool) map[string]dbus.Variant {
	return map[string]dbus.Variant{
		"id":                               dbus.MakeVariant(fmt.Sprintf("%s-%s.%d", osname, d.checksum, d.serial)),
		"osname":                           dbus.MakeVariant(osname),
		"checksum":                         dbus.MakeVariant(d.checksum),
		"serial":                           dbus.MakeVariant(d.serial),
		"booted":                           dbus.MakeVariant(booted),
		"staged":                           dbus.MakeVariant(d.staged),
		"pinned":                           dbus.MakeVariant(false),
		"unlocked":                         dbus.MakeVariant("none"),
		"timestamp":                        dbus.MakeVariant(uint64(1700000000)),
		"version":                          dbus.MakeVariant("42." + d.digest[7:11]),
		"container-image-reference":        dbus.MakeVariant(d.refspec),
		"container-image-reference-digest": dbus.MakeVariant(d.digest),
		"base-commit-meta":                 dbus.MakeVariant(map[string]dbus.Variant{"ostree.manifest-digest": dbus.MakeVariant(d.digest)}),
		"packages":                         dbus.MakeVariant([]string{}),
		"requested-packages":               dbus.MakeVariant([]string{}),
		"regenerate-initramfs":             dbus.MakeVariant(false),
	}
}

func (b *memBackend) Deployments(context.Context) ([]map[string]dbus.Variant, int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]map[string]dbus.Variant, len(b.deps))
	for i, d := range b.deps {
		out[i] = d.dict(b.osname, i == b.booted)
	}
	return out, b.booted, nil
}

// merge is the staged/pending deployment, else the booted one.
func (b *memBackend) merge() *memDeployment {
	if b.booted > 0 {
		return b.deps[0]
	}
	return b.deps[b.booted]
}

func (b *memBackend) Stage(ctx context.Context, req server.StageRequest, p server.Progress) error {
	b.mu.Lock()
	b.stages = append(b.stages, req)
	current := b.merge().refspec
	fail := b.failStage
	b.mu.Unlock()
	if req.Refspec != "" && req.Refspec == current {
		return fmt.Errorf("Old and new refs are equal: %s", req.Refspec)
	}
	refspec := req.Refspec
	if refspec == "" {
		refspec = current
	}
	digest := req.Revision
	if i := strings.LastIndex(refspec, "@"); digest == "" && i >= 0 {
		digest = refspec[i+1:]
	}
	p.Message("Pulling manifest: " + refspec)
	p.Message("Importing: " + refspec + " (digest: " + digest + ")")
	p.Message("ostree chunk layers needed: 1 (1.0 MB)")
	p.TaskBegin("[1/1] Fetching ostree chunk " + digest[7:19])
	p.PercentProgress("Fetching", 50)
	p.DownloadProgress(server.DownloadProgress{Start: 1, Elapsed: 1, Bytes: 1 << 20, BytesPerSecond: 1 << 20})
	p.TaskEnd("done")
	p.ProgressEnd()
	if err := ctx.Err(); err != nil {
		return err
	}
	if fail != nil {
		return fail
	}
	if req.DownloadOnly {
		p.Message("Update downloaded.")
		return nil
	}
	p.TaskBegin("Staging deployment")
	b.mu.Lock()
	if b.booted > 0 && b.deps[0].staged {
		b.deps = b.deps[1:]
		b.booted--
	}
	d := b.newDeployment(digest)
	d.refspec, d.staged, d.locked = refspec, true, req.LockFinalization
	b.deps = append([]*memDeployment{d}, b.deps...)
	b.booted++
	b.mu.Unlock()
	p.TaskEnd("done")
	return nil
}

func (b *memBackend) Finalize(_ context.Context, req server.FinalizeRequest) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.booted == 0 || !b.deps[0].staged {
		return errors.New("No pending staged deployment found")
	}
	staged := b.deps[0]
	switch {
	case req.Checksum == "" && !req.AllowMissingChecksum:
		return errors.New("Missing expected checksum")
	case req.Checksum != "" && req.Checksum != staged.digest:
		return fmt.Errorf("Expected staged base checksum %s, but found %s", req.Checksum, staged.digest)
	case !staged.locked && !req.AllowUnlocked:
		return errors.New("Staged deployment already unlocked")
	}
	staged.locked = false
	return nil
}

func (b *memBackend) Cleanup(_ context.Context, elements []string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range elements {
		switch {
		case e == "pending-deploy" && b.booted > 0:
			b.deps = b.deps[1:]
			b.booted--
		case e == "rollback-deploy" && b.booted+1 < len(b.deps):
			b.deps = append(b.deps[:b.booted+1], b.deps[b.booted+2:]...)
		}
	}
	return nil
}

func (b *memBackend) Rollback(_ context.Context, p server.Progress) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.booted > 0 && b.deps[0].staged {
		return errors.New("Staged deployment (remove with cleanup -p)")
	}
	if b.booted+1 >= len(b.deps) {
		return errors.New("No rollback deployment found")
	}
	r := b.deps[b.booted+1]
	p.Message(fmt.Sprintf("Moving '%s.%d' to be first deployment", r.checksum, r.serial))
	b.deps = append([]*memDeployment{r}, append(b.deps[:b.booted+1:b.booted+1], b.deps[b.booted+2:]...)...)
	b.booted++
	return nil
}

func (b *memBackend) Reboot(context.Context) error {
	b.reboots <- struct{}{}
	return nil
}

func (b *memBackend) stageRequests() []server.StageRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]server.StageRequest(nil), b.stages...)
}

func (b *memBackend) stagedLocked() (staged, locked bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.booted > 0 && b.deps[0].staged {
		return true, b.deps[0].locked
	}
	return false, false
}
