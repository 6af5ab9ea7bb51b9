package hostfs

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"syscall"

	"golang.org/x/sys/unix"
)

// getXattrs reads every extended attribute of an open file.
func getXattrs(fd int) (map[string][]byte, error) {
	size, err := unix.Flistxattr(fd, nil)
	if errors.Is(err, unix.ENOTSUP) || size == 0 {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	buf := make([]byte, size)
	if size, err = unix.Flistxattr(fd, buf); err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	out := map[string][]byte{}
	for _, name := range bytes.Split(buf[:size], []byte{0}) {
		if len(name) == 0 {
			continue
		}
		n := string(name)
		vsize, err := unix.Fgetxattr(fd, n, nil)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", n, err)
		}
		val := make([]byte, vsize)
		if vsize, err = unix.Fgetxattr(fd, n, val); err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", n, err)
		}
		out[n] = val[:vsize]
	}
	return out, nil
}

// setXattrs sets attrs on an open file.
func setXattrs(fd int, attrs map[string][]byte) error {
	for n, v := range attrs {
		if err := unix.Fsetxattr(fd, n, v, 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", n, err)
		}
	}
	return nil
}

// copyHashed copies src to dst and returns the SHA-256 of what it copied.
func copyHashed(dst io.Writer, src io.Reader) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, h), src); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeAtomic writes data to name in r through a temporary file and a
// rename, synced.
func writeAtomic(r *os.Root, name string, data []byte) error {
	tmp := path.Join(path.Dir(name), ".tmp-"+path.Base(name))
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = r.Remove(tmp)
		return err
	}
	return r.Rename(tmp, name)
}
