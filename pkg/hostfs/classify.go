package hostfs

// EtcClass is what the /etc 3-way merge at finalization will do to a path.
type EtcClass string

// The classes of EtcReport entries (the merge of ostree 2022.7+).
const (
	// NewDefaultApplies: /etc was not changed locally; the staged image's
	// new default (or its deletion) will be in /etc after the reboot.
	NewDefaultApplies EtcClass = "new-default-applies"
	// LocalEditKept: changed locally and the image did not change the
	// default (or changed it to exactly the local version): kept.
	LocalEditKept EtcClass = "local-edit-kept"
	// Conflict: changed locally AND the image changed the default: the local
	// version is kept and the image's change is lost.
	Conflict EtcClass = "conflict"
	// LocalOnly: added locally, in neither image: kept.
	LocalOnly EtcClass = "local-only"
	// DeletedLocally: deleted locally: stays deleted whatever the image ships.
	DeletedLocally EtcClass = "deleted-locally"
)

// LocalEdit reports whether c is a path `ostree admin config-diff` lists.
func (c EtcClass) LocalEdit() bool { return c != NewDefaultApplies && c != "" }

// Change names what differs between two versions of a path.
type Change string

// Changes, in the order diffMeta reports them.
const (
	ChangeAdded   Change = "added"
	ChangeDeleted Change = "deleted"
	ChangeType    Change = "type"
	ChangeMode    Change = "mode"
	ChangeOwner   Change = "owner"
	ChangeContent Change = "content"
	ChangeTarget  Change = "target"
)

// diffMeta is libostree's diff of one path (OSTREE_DIFF_FLAGS_IGNORE_XATTRS,
// as config-diff and the merge use): type, mode, owner, content (regular
// files, by SHA-256, or by size when one was not read) and symlink target.
// Directory metadata counts; xattrs and times do not. Nil means equal.
func diffMeta(a, b *Meta) []Change {
	switch {
	case a == nil && b == nil:
		return nil
	case a == nil:
		return []Change{ChangeAdded}
	case b == nil:
		return []Change{ChangeDeleted}
	case a.Kind != b.Kind:
		return []Change{ChangeType}
	}
	var out []Change
	if a.Mode != b.Mode {
		out = append(out, ChangeMode)
	}
	if a.UID != b.UID || a.GID != b.GID {
		out = append(out, ChangeOwner)
	}
	switch a.Kind {
	case KindFile:
		if a.Size != b.Size || a.SHA256 != b.SHA256 {
			out = append(out, ChangeContent)
		}
	case KindSymlink:
		if a.target != b.target {
			out = append(out, ChangeTarget)
		}
	}
	return out
}

// classify decides the class of a path from its booted default (old), its
// staged default (new) and its live version; "" means nothing to report
// (not changed locally, not changed by the image).
func classify(old, new, live *Meta) (class EtcClass, local, image []Change) {
	local, image = diffMeta(old, live), diffMeta(old, new)
	switch {
	case local == nil && image == nil:
		return "", nil, nil
	case local == nil:
		return NewDefaultApplies, nil, image
	case live == nil:
		return DeletedLocally, local, image
	case old == nil && new == nil:
		return LocalOnly, local, nil
	case diffMeta(new, live) == nil || image == nil:
		// The local version wins, and the image loses nothing by it.
		return LocalEditKept, local, image
	default:
		return Conflict, local, image
	}
}

// recurse reports which trees (old, new, live) a walk descends into below a
// path: libostree's diff descends where booted default and live are both
// directories, and lists every child of a directory added locally; a
// directory only the new image adds is listed too (it all applies).
func recurse(old, new, live *Meta) (in [3]bool, ok bool) {
	isDir := func(m *Meta) bool { return m != nil && m.Kind == KindDir }
	switch {
	case isDir(old) && isDir(live):
		return [3]bool{true, isDir(new), true}, true
	case old == nil && isDir(live):
		return [3]bool{false, isDir(new), true}, true
	case old == nil && live == nil && isDir(new):
		return [3]bool{false, true, false}, true
	}
	return in, false
}

// Outcome is what /etc will hold at a path after the merge.
type Outcome string

// Outcomes.
const (
	KeepsLocal      Outcome = "keeps-local"
	TakesNewDefault Outcome = "takes-new-default"
	Absent          Outcome = "absent"
)

// outcome follows libostree's merge: removed paths are deleted, changed and
// added ones copied over the new defaults, except that a directory the new
// defaults already have is left as it is (its local mode and owner are lost,
// though config-diff lists them).
func outcome(class EtcClass, new, live *Meta) Outcome {
	switch class {
	case NewDefaultApplies:
		if new == nil {
			return Absent
		}
		return TakesNewDefault
	case DeletedLocally:
		return Absent
	}
	if live != nil && live.Kind == KindDir && new != nil && new.Kind == KindDir {
		return TakesNewDefault
	}
	return KeepsLocal
}
