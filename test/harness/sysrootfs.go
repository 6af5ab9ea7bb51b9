package harness

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// sysrootFS is a directory-tier node's sysroot on its own size-limited filesystem (a tmpfs
// mounted at the sysroot directory before `ostree admin init-fs`), so the free space the agent
// reads with statfs is the node's, and a test can run it out of space (Options.SysrootSize).
type sysrootFS struct {
	dir  string
	size int64
}

// mountSysrootFS mounts a tmpfs of size bytes at dir (created when missing).
func mountSysrootFS(dir string, size int64) (*sysrootFS, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating the sysroot mount point: %w", err)
	}
	if err := unix.Mount("layerd-sysroot", dir, "tmpfs", unix.MS_NODEV, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
		return nil, fmt.Errorf("mounting a %d-byte tmpfs at %s: %w", size, dir, err)
	}
	return &sysrootFS{dir: dir, size: size}, nil
}

// resize changes the filesystem's size in place (mount -o remount,size=): its content and the
// pods' read-only binds of it stay; they see the new size at once. Shrinking below what is in
// use fails.
func (f *sysrootFS) resize(size int64) error {
	if err := unix.Mount("", f.dir, "", unix.MS_REMOUNT|unix.MS_NODEV, fmt.Sprintf("size=%d", size)); err != nil {
		return fmt.Errorf("resizing the sysroot filesystem at %s to %d bytes: %w", f.dir, size, err)
	}
	f.size = size
	return nil
}

// unmount drops the filesystem and everything on it. Processes of the node must be stopped; a
// mount that is still busy is detached lazily (so nothing is left in the mount table) and
// reported.
func (f *sysrootFS) unmount() error {
	err := unix.Unmount(f.dir, 0)
	if errors.Is(err, unix.EBUSY) {
		if derr := unix.Unmount(f.dir, unix.MNT_DETACH); derr != nil {
			return fmt.Errorf("unmounting the sysroot filesystem at %s: %w (detaching: %v)", f.dir, err, derr)
		}
		return fmt.Errorf("the sysroot filesystem at %s was busy at close; detached it: %w", f.dir, err)
	}
	if err != nil {
		return fmt.Errorf("unmounting the sysroot filesystem at %s: %w", f.dir, err)
	}
	return nil
}

// ResizeSysroot grows (or shrinks) the node's own sysroot filesystem to size bytes, as an admin
// would make room on a full disk. Only for a node started with Options.SysrootSize.
func (n *Node) ResizeSysroot(size int64) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.sysrootFS == nil {
		return fmt.Errorf("node %s: its sysroot has no filesystem of its own (see Options.SysrootSize)", n.Name)
	}
	if err := n.sysrootFS.resize(size); err != nil {
		return fmt.Errorf("node %s: %w", n.Name, err)
	}
	n.w.logf("%s: sysroot filesystem resized to %d bytes", n.Name, size)
	return nil
}

// SysrootFree is the free space of the filesystem holding the node's sysroot, as statfs (and
// so the agent) reports it.
func (n *Node) SysrootFree() (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(n.Sysroot.Path, &st); err != nil {
		return 0, fmt.Errorf("node %s: statfs %s: %w", n.Name, n.Sysroot.Path, err)
	}
	return st.Bavail * uint64(st.Bsize), nil
}
