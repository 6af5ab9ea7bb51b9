package backend

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// libostree 2022.7 has no `ostree admin set-default`, and no CLI reorders
// deployments without creating new ones. rpm-ostree's Rollback calls
// ostree_sysroot_write_deployments() with the list reordered; for a sysroot
// with sysroot.bootloader=none that does exactly what writeBootOrder does:
//
//   - new boot version NB = 1 - B (boot/loader → loader.B today);
//   - a fresh symlink farm ostree/boot.NB.1/<os>/<bootcsum>/<bootserial> →
//     ../../../deploy/<os>/deploy/<csum>.<serial>, bootserials counted per
//     bootcsum in the new order, and ostree/boot.NB → boot.NB.1;
//   - boot/loader.NB/entries/ostree-<n-i>-<os>.conf for deployment i (version
//     n-i, title suffix "(ostree:i)", ostree= and init= pointing at the new
//     links), the kernel and initramfs lines unchanged;
//   - an atomic swap of the boot/loader symlink, then removal of the old
//     loader.B and ostree/boot.B*.
//
// Everything runs under libostree's own sysroot lock (ostree/lock, an OFD
// lock), so it cannot interleave with an ostree command.

var titleIndexRE = regexp.MustCompile(`\(ostree:[0-9]+\)`)

// writeBootOrder rewrites the boot configuration so that the non-staged
// deployments appear in the given order (the first one is the default).
func writeBootOrder(sysroot string, bootVersion int, order []deployment) error {
	if bootVersion != 0 && bootVersion != 1 {
		return fmt.Errorf("write boot order: no current boot version")
	}
	nb := 1 - bootVersion
	ostreeDir := filepath.Join(sysroot, "ostree")
	bootDir := filepath.Join(sysroot, "boot")
	// Leftovers of an earlier swap of this boot version are not in use.
	if err := removeBootVersion(sysroot, nb); err != nil {
		return err
	}
	subdir := fmt.Sprintf("boot.%d.1", nb)
	serials := map[string]int{} // bootcsum → next bootserial
	n := len(order)
	entriesDir := filepath.Join(bootDir, fmt.Sprintf("loader.%d", nb), "entries")
	if err := os.MkdirAll(entriesDir, 0o755); err != nil {
		return fmt.Errorf("write boot order: %w", err)
	}
	for i, d := range order {
		if d.Entry == nil {
			return fmt.Errorf("write boot order: deployment %s has no boot entry", d.name())
		}
		bootserial := serials[d.BootCsum]
		serials[d.BootCsum]++
		parent := filepath.Join(ostreeDir, subdir, d.OSName, d.BootCsum)
		if err := os.MkdirAll(parent, 0o755); err != nil {
			return fmt.Errorf("write boot order: %w", err)
		}
		target := filepath.Join("..", "..", "..", "deploy", d.OSName, "deploy", d.name())
		if err := os.Symlink(target, filepath.Join(parent, strconv.Itoa(bootserial))); err != nil {
			return fmt.Errorf("write boot order: bootlink: %w", err)
		}
		newOstree := fmt.Sprintf("/ostree/boot.%d/%s/%s/%d", nb, d.OSName, d.BootCsum, bootserial)
		var b strings.Builder
		for _, kv := range d.Entry.Lines {
			k, v := kv[0], kv[1]
			switch k {
			case "version":
				v = strconv.Itoa(n - i)
			case "title":
				v = titleIndexRE.ReplaceAllString(v, fmt.Sprintf("(ostree:%d)", i))
			case "options":
				v = strings.ReplaceAll(v, d.Entry.Ostree, newOstree)
			}
			b.WriteString(k + " " + v + "\n")
		}
		name := fmt.Sprintf("ostree-%d-%s.conf", n-i, d.OSName)
		if err := os.WriteFile(filepath.Join(entriesDir, name), []byte(b.String()), 0o644); err != nil {
			return fmt.Errorf("write boot order: %w", err)
		}
	}
	if err := swapSymlink(filepath.Join(ostreeDir, fmt.Sprintf("boot.%d", nb)), subdir); err != nil {
		return err
	}
	if err := swapSymlink(filepath.Join(bootDir, "loader"), fmt.Sprintf("loader.%d", nb)); err != nil {
		return err
	}
	return removeBootVersion(sysroot, bootVersion)
}

// removeBootVersion deletes boot/loader.V, ostree/boot.V and ostree/boot.V.*.
func removeBootVersion(sysroot string, v int) error {
	paths := []string{
		filepath.Join(sysroot, "boot", fmt.Sprintf("loader.%d", v)),
		filepath.Join(sysroot, "ostree", fmt.Sprintf("boot.%d", v)),
	}
	subs, err := filepath.Glob(filepath.Join(sysroot, "ostree", fmt.Sprintf("boot.%d.*", v)))
	if err != nil {
		return fmt.Errorf("remove boot version %d: %w", v, err)
	}
	for _, p := range append(paths, subs...) {
		if err := os.RemoveAll(p); err != nil {
			return fmt.Errorf("remove boot version %d: %w", v, err)
		}
	}
	return nil
}

// swapSymlink atomically points path at target.
func swapSymlink(path, target string) error {
	tmp := path + ".tmp"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return fmt.Errorf("swap %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("swap %s: %w", path, err)
	}
	return nil
}

// lockSysroot takes libostree's exclusive sysroot lock (ostree/lock, an OFD
// write lock as glnx_make_lock_file takes it) and returns its release.
func lockSysroot(sysroot string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(sysroot, "ostree", "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sysroot lock: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	for {
		err = unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLKW, &lk)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("sysroot lock: %w", err)
	}
	return func() { f.Close() }, nil
}
