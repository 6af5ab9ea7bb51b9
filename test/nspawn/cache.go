package nspawn

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// DefaultCacheDir is ${LAYERD_CACHE:-$HOME/.cache/layerd}: it lives outside the repository
// and survives between test runs.
func DefaultCacheDir() (string, error) {
	if d := os.Getenv("LAYERD_CACHE"); d != "" {
		return d, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("locating the layerd cache: %w", err)
	}
	return filepath.Join(home, ".cache", "layerd"), nil
}

// cached returns root/key, building it first when it is missing. The build runs under an
// exclusive flock on root/.lock (so concurrent test binaries build once), into
// root/key.tmp.<pid>, which is renamed into place only when build succeeds. Leftovers of an
// interrupted build (including mounts debootstrap left in it) are removed first.
func cached(root, key string, build func(tmp string) error) (string, error) {
	out := filepath.Join(root, key)
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(root, ".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("opening cache lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it too
	if _, err := os.Stat(out); err == nil {
		return out, nil
	}
	stale, _ := filepath.Glob(out + ".tmp.*")
	for _, s := range stale {
		if err := removeAllUnmounting(s); err != nil {
			return "", fmt.Errorf("removing stale cache build: %w", err)
		}
	}
	tmp := out + ".tmp." + strconv.Itoa(os.Getpid())
	if err := os.MkdirAll(tmp, 0o755); err != nil {
		return "", fmt.Errorf("creating cache build dir: %w", err)
	}
	if err := build(tmp); err != nil {
		return "", errors.Join(err, removeAllUnmounting(tmp))
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", errors.Join(fmt.Errorf("publishing cache entry: %w", err), removeAllUnmounting(tmp))
	}
	return out, nil
}

// removeAllUnmounting detaches every mount at or below dir (deepest first), then removes dir.
func removeAllUnmounting(dir string) error {
	mps, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			errs = append(errs, fmt.Errorf("unmounting %s: %w", mp, err))
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
	}
	return errors.Join(errs...)
}

// mountsUnder lists the mount points of this mount namespace at or below dir, deepest first.
func mountsUnder(dir string) ([]string, error) {
	all, err := mountPoints("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, mp := range all {
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out, nil
}

// unescapeMountinfo undoes the octal escapes (\040 for space etc.) of /proc/*/mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
