package rpmostree

import (
	"fmt"

	"github.com/godbus/dbus/v5"
)

// Event is one progress signal of a transaction (reference §5): Message, TaskBegin, TaskEnd,
// PercentProgress, DownloadProgress, SignatureProgress or ProgressEnd.
type Event interface{ event() }

// ProgressFunc receives the events of a transaction, in order, on the caller's goroutine path.
// It must not block for long.
type ProgressFunc func(Event)

// Message is free text, line-buffered.
type Message struct{ Text string }

// TaskBegin starts a unit of work.
type TaskBegin struct{ Text string }

// TaskEnd ends that unit (text usually "done").
type TaskEnd struct{ Text string }

// PercentProgress is text with a percentage.
type PercentProgress struct {
	Text    string
	Percent uint32
}

// DownloadProgress is an ostree pull's progress: the six tuples of the signal, flattened.
type DownloadProgress struct {
	StartTime, ElapsedSeconds                           uint64
	OutstandingFetches, OutstandingWrites               uint32
	MetadataScanned, MetadataFetched, MetadataOutstand  uint32
	DeltaTotalParts, DeltaFetchedParts, DeltaSuperblock uint32
	DeltaTotalSize                                      uint64
	ContentFetched, ContentRequested                    uint32
	Bytes, BytesPerSecond                               uint64
}

// SignatureProgress reports signature data for a commit.
type SignatureProgress struct {
	Signature []dbus.Variant
	Commit    string
}

// ProgressEnd says progress output is over.
type ProgressEnd struct{}

func (Message) event()           {}
func (TaskBegin) event()         {}
func (TaskEnd) event()           {}
func (PercentProgress) event()   {}
func (DownloadProgress) event()  {}
func (SignatureProgress) event() {}
func (ProgressEnd) event()       {}

// finished is the Finished(bs) signal.
type finished struct {
	success bool
	message string
}

// decodeSignal turns a transaction signal into an Event or a finished. Unknown signals and
// signals with an unexpected body yield neither (and an error for the latter).
func decodeSignal(sig *dbus.Signal) (Event, *finished, error) {
	if sig.Path != TxnPath {
		return nil, nil, nil
	}
	var err error
	switch sig.Name {
	case TxnIface + ".Finished":
		var f finished
		if err = dbus.Store(sig.Body, &f.success, &f.message); err == nil {
			return nil, &f, nil
		}
	case TxnIface + ".Message":
		var e Message
		if err = dbus.Store(sig.Body, &e.Text); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".TaskBegin":
		var e TaskBegin
		if err = dbus.Store(sig.Body, &e.Text); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".TaskEnd":
		var e TaskEnd
		if err = dbus.Store(sig.Body, &e.Text); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".PercentProgress":
		var e PercentProgress
		if err = dbus.Store(sig.Body, &e.Text, &e.Percent); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".DownloadProgress":
		var e DownloadProgress
		if e, err = decodeDownload(sig.Body); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".SignatureProgress":
		var e SignatureProgress
		if err = dbus.Store(sig.Body, &e.Signature, &e.Commit); err == nil {
			return e, nil, nil
		}
	case TxnIface + ".ProgressEnd":
		return ProgressEnd{}, nil, nil
	default:
		return nil, nil, nil
	}
	return nil, nil, fmt.Errorf("signal %s: %w", sig.Name, err)
}

type (
	tt   struct{ A, B uint64 }
	uu   struct{ A, B uint32 }
	uuu  struct{ A, B, C uint32 }
	uuut struct {
		A, B, C uint32
		D       uint64
	}
)

func decodeDownload(body []any) (DownloadProgress, error) {
	var (
		tm, transfer         tt
		outstanding, content uu
		meta                 uuu
		delta                uuut
	)
	if err := dbus.Store(body, &tm, &outstanding, &meta, &delta, &content, &transfer); err != nil {
		return DownloadProgress{}, err
	}
	return DownloadProgress{
		StartTime: tm.A, ElapsedSeconds: tm.B,
		OutstandingFetches: outstanding.A, OutstandingWrites: outstanding.B,
		MetadataScanned: meta.A, MetadataFetched: meta.B, MetadataOutstand: meta.C,
		DeltaTotalParts: delta.A, DeltaFetchedParts: delta.B, DeltaSuperblock: delta.C, DeltaTotalSize: delta.D,
		ContentFetched: content.A, ContentRequested: content.B,
		Bytes: transfer.A, BytesPerSecond: transfer.B,
	}, nil
}
