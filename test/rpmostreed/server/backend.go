package server

import (
	"context"

	"github.com/godbus/dbus/v5"
)

// Backend does the real work behind the bus objects; test/rpmostreed/backend implements it on
// a libostree sysroot, and the tests use an in-memory one. Errors of Stage, Finalize, Cleanup
// and Rollback end the transaction as Finished(false, err.Error()), so they must carry
// rpm-ostree's texts (reference §7.2), e.g. "Old and new refs are equal: <ref>".
type Backend interface {
	// Deployments returns every deployment in rpm-ostree's dict form (reference §8), in boot
	// order with a staged one first, and the index of the booted one (-1: not booted here).
	Deployments(ctx context.Context) ([]map[string]dbus.Variant, int, error)
	// Stage runs a deploy-family transaction (Rebase, Deploy, Upgrade, UpdateDeployment).
	Stage(ctx context.Context, req StageRequest, p Progress) error
	// Finalize validates and unlocks the staged deployment; the server then requests the
	// reboot.
	Finalize(ctx context.Context, req FinalizeRequest) error
	// Cleanup removes what the elements name (validated by the server).
	Cleanup(ctx context.Context, elements []string) error
	// Rollback makes the rollback deployment the default.
	Rollback(ctx context.Context, p Progress) error
	// Reboot is the harness' reboot hook, called after Finished reached the clients of a
	// transaction that asked for a reboot.
	Reboot(ctx context.Context) error
}

// StageRequest is a deploy-family transaction reduced to what the backend needs. Option
// conflicts the server can see (cache-only with download-only, …) never reach the backend.
type StageRequest struct {
	Refspec          string // set-refspec; "" keeps the origin of the merge deployment
	Revision         string // set-revision (for containers a sha256: manifest digest)
	LockFinalization bool
	DownloadOnly     bool
	CacheOnly        bool
	AllowDowngrade   bool
}

// FinalizeRequest carries FinalizeDeployment's options (reference §4.4).
type FinalizeRequest struct {
	Checksum             string
	AllowMissingChecksum bool
	AllowUnlocked        bool
}

// Progress emits a transaction's progress signals to every connected peer.
type Progress interface {
	Message(text string)
	TaskBegin(text string)
	TaskEnd(text string)
	PercentProgress(text string, percent uint32)
	DownloadProgress(DownloadProgress)
	ProgressEnd()
}

// DownloadProgress is the Transaction.DownloadProgress signal, (tt)(uu)(uuu)(uuut)(uu)(tt):
// time, outstanding, metadata, delta, content, transfer.
type DownloadProgress struct {
	Start, Elapsed                                            uint64
	OutstandingFetches, OutstandingWrites                     uint32
	MetadataScanned, MetadataFetched, MetadataOutstanding     uint32
	DeltaTotalParts, DeltaFetchedParts, DeltaTotalSuperblocks uint32
	DeltaTotalSize                                            uint64
	ContentFetched, ContentRequested                          uint32
	Bytes, BytesPerSecond                                     uint64
}
