package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Finalization lock. libostree 2022.7 has no `deploy --lock-finalization`;
// its `ostree admin finalize-staged` skips finalization while the legacy file
// /run/ostree/staged-deployment-locked exists, so lock-finalization creates
// that file. rpm-ostree's own lock-finalization records the lock inside the
// staged state instead and therefore never makes the dict key
// finalization-locked appear (reference §8); lockOwnMarker remembers that the
// legacy file is ours, so Deployments reports the key only for a legacy file
// somebody else created.
const lockOwnMarker = "layerd-fakeboot/lock-finalization"

// setFinalizationLock creates or removes the lock (and its marker).
func setFinalizationLock(runDir string, on bool) error {
	legacy := filepath.Join(runDir, stagedLockedFile)
	marker := filepath.Join(runDir, lockOwnMarker)
	if !on {
		for _, p := range []string{legacy, marker} {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("unlock finalization: %w", err)
			}
		}
		return nil
	}
	for _, p := range []string{marker, legacy} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("lock finalization: %w", err)
		}
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			return fmt.Errorf("lock finalization: %w", err)
		}
	}
	return nil
}

// readFinalizationLock reports whether finalization is locked and whether
// the legacy lock file was created by someone other than lock-finalization.
func readFinalizationLock(runDir string) (locked, foreignLegacy bool) {
	if _, err := os.Stat(filepath.Join(runDir, stagedLockedFile)); err != nil {
		return false, false
	}
	_, err := os.Stat(filepath.Join(runDir, lockOwnMarker))
	return true, err != nil
}
