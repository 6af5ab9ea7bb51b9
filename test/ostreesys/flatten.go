package ostreesys

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OCI whiteout markers.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)

// FlattenLayers applies uncompressed layer tar streams (bottom first) to
// dst, honouring OCI whiteouts: `.wh.x` removes x from lower layers and
// `.wh..wh..opq` hides a directory's lower-layer content. Entries that would
// escape dst (`..`, or a parent that is an absolute or escaping symlink)
// are rejected. Device nodes and FIFOs are skipped (ostree cannot commit
// them). Call PrepareTree afterwards to get an ostree-committable tree.
//
// If FlattenLayers creates dst, it removes it again on failure; content
// added to a pre-existing dst is left for the caller to discard.
func FlattenLayers(dst string, layers []io.Reader) (err error) {
	root, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("ostreesys: flatten: %w", err)
	}
	cleanup, err := ensureDir(root)
	if err != nil {
		return fmt.Errorf("ostreesys: flatten: %w", err)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	for i, l := range layers {
		if err := applyLayer(root, l); err != nil {
			return fmt.Errorf("ostreesys: flatten layer %d: %w", i, err)
		}
	}
	return nil
}

// ensureDir creates dir if missing and returns a func that removes it again
// when it was created here (a no-op otherwise).
func ensureDir(dir string) (func(), error) {
	if _, err := os.Lstat(dir); err == nil {
		return func() {}, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return func() { _ = os.RemoveAll(dir) }, nil
}

// applyLayer applies one tar stream; created tracks this layer's own paths
// so whiteouts only affect lower layers.
func applyLayer(root string, r io.Reader) error {
	tr := tar.NewReader(r)
	created := map[string]bool{}
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read tar: %w", err)
		}
		rel, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" { // the root itself
			continue
		}
		dir, base := path.Split(rel)
		dir = strings.TrimSuffix(dir, "/")
		if strings.HasPrefix(base, whiteoutPrefix) {
			if err := applyWhiteout(root, dir, base, created); err != nil {
				return fmt.Errorf("whiteout %s: %w", hdr.Name, err)
			}
			continue
		}
		if err := applyEntry(root, rel, hdr, tr); err != nil {
			return fmt.Errorf("entry %s: %w", hdr.Name, err)
		}
		for p := rel; p != "." && p != ""; p = path.Dir(p) {
			created[p] = true
		}
	}
}

// cleanEntry normalizes a tar entry name to a root-relative path, rejecting
// any that climbs out of the root.
func cleanEntry(name string) (string, error) {
	n := strings.TrimLeft(name, "/")
	for _, c := range strings.Split(n, "/") {
		if c == ".." {
			return "", fmt.Errorf("entry %q escapes the root", name)
		}
	}
	n = path.Clean(n)
	if n == "." {
		return "", nil
	}
	return n, nil
}

// resolveParent returns the host path of dir (root-relative), following
// relative symlinks that stay inside root and rejecting absolute or
// escaping ones. The returned directory exists (created as needed).
func resolveParent(root, dir string) (string, error) {
	cur := ""
	comps := strings.Split(dir, "/")
	for hops := 0; len(comps) > 0; {
		c := comps[0]
		comps = comps[1:]
		if c == "" || c == "." {
			continue
		}
		next := path.Join(cur, c)
		host := filepath.Join(root, next)
		fi, err := os.Lstat(host)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Mkdir(host, 0o755); err != nil {
				return "", err
			}
			cur = next
		case err != nil:
			return "", err
		case fi.Mode()&os.ModeSymlink != 0:
			if hops++; hops > 40 {
				return "", fmt.Errorf("too many symlinks under %q", dir)
			}
			target, err := os.Readlink(host)
			if err != nil {
				return "", err
			}
			if path.IsAbs(target) {
				return "", fmt.Errorf("path %q traverses absolute symlink %s -> %s", dir, next, target)
			}
			joined := path.Join(cur, target)
			if joined == ".." || strings.HasPrefix(joined, "../") {
				return "", fmt.Errorf("path %q traverses symlink %s -> %s out of the root", dir, next, target)
			}
			if joined == "." {
				joined = ""
			}
			comps = append(strings.Split(joined, "/"), comps...)
			cur = ""
		case !fi.IsDir():
			return "", fmt.Errorf("parent %s is not a directory", next)
		default:
			cur = next
		}
	}
	return filepath.Join(root, cur), nil
}

func applyWhiteout(root, dir, base string, created map[string]bool) error {
	parent, err := resolveParent(root, dir)
	if err != nil {
		return err
	}
	if base == whiteoutOpaque {
		return clearLower(parent, dir, created)
	}
	name := strings.TrimPrefix(base, whiteoutPrefix)
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("bad whiteout name %q", base)
	}
	if created[path.Join(dir, name)] {
		return nil // whiteouts hide lower layers only
	}
	return removeAll(filepath.Join(parent, name))
}

// clearLower removes everything under host dir (root-relative rel) that was
// not created by the current layer.
func clearLower(host, rel string, created map[string]bool) error {
	ents, err := os.ReadDir(host)
	if err != nil {
		return err
	}
	for _, e := range ents {
		r := path.Join(rel, e.Name())
		h := filepath.Join(host, e.Name())
		if !created[r] {
			if err := removeAll(h); err != nil {
				return err
			}
			continue
		}
		if e.IsDir() && e.Type()&os.ModeSymlink == 0 {
			if err := clearLower(h, r, created); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyEntry(root, rel string, hdr *tar.Header, r io.Reader) error {
	dir, base := path.Split(rel)
	parent, err := resolveParent(root, strings.TrimSuffix(dir, "/"))
	if err != nil {
		return err
	}
	target := filepath.Join(parent, base)
	mode := os.FileMode(hdr.Mode & 0o777)
	if hdr.Mode&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if hdr.Mode&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if hdr.Mode&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	existing, lerr := os.Lstat(target)
	exists := lerr == nil
	switch hdr.Typeflag {
	case tar.TypeDir:
		if exists && !existing.IsDir() {
			if err := removeAll(target); err != nil {
				return err
			}
			exists = false
		}
		if !exists {
			if err := os.Mkdir(target, 0o755); err != nil {
				return err
			}
		}
	case tar.TypeReg, tar.TypeRegA:
		if err := removeAll(target); err != nil {
			return err
		}
		f, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, cerr := io.Copy(f, r)
		if err := f.Close(); cerr == nil {
			cerr = err
		}
		if cerr != nil {
			return cerr
		}
	case tar.TypeSymlink:
		if err := removeAll(target); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, target); err != nil {
			return err
		}
	case tar.TypeLink:
		lrel, err := cleanEntry(hdr.Linkname)
		if err != nil || lrel == "" {
			return fmt.Errorf("bad hardlink target %q", hdr.Linkname)
		}
		ldir, lbase := path.Split(lrel)
		lparent, err := resolveParent(root, strings.TrimSuffix(ldir, "/"))
		if err != nil {
			return err
		}
		src := filepath.Join(lparent, lbase)
		if fi, err := os.Lstat(src); err != nil {
			return fmt.Errorf("hardlink target: %w", err)
		} else if fi.IsDir() {
			return fmt.Errorf("hardlink target %q is a directory", hdr.Linkname)
		}
		if src == target {
			return nil
		}
		if err := removeAll(target); err != nil {
			return err
		}
		return os.Link(src, target)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return nil
	default:
		return nil // pax/global headers and unknown types carry no file
	}
	if os.Geteuid() == 0 {
		if err := os.Lchown(target, hdr.Uid, hdr.Gid); err != nil {
			return err
		}
	}
	if hdr.Typeflag != tar.TypeSymlink {
		if err := os.Chmod(target, mode); err != nil {
			return err
		}
	}
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if err := unix.Lsetxattr(target, name, []byte(v), 0); err != nil &&
				!errors.Is(err, unix.ENOTSUP) && !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("xattr %s: %w", name, err)
			}
		}
	}
	return nil
}

// removeAll removes p (file, link or tree), clearing nothing outside it.
func removeAll(p string) error {
	if err := os.RemoveAll(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}
