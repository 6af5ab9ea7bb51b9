package osimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// OCI whiteout markers.
const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// layerContent is what goes into one layer tar.
type layerContent struct {
	files     map[string]File
	whiteouts []string // paths hidden from lower layers
	opaque    []string // directories whose lower content is hidden
}

// tarLayer builds a gzip OCI layer. Entries are sorted, parents come first
// (implicit parents are root-owned 0755 directories), and headers carry no
// atime/ctime/PAX records, so the digest only depends on the content.
func tarLayer(c layerContent) (v1.Layer, error) {
	entries := map[string]File{}
	addParents := func(p string) {
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Dir: true}
			}
		}
	}
	for p, f := range c.files {
		cp, err := clean(p)
		if err != nil {
			return nil, err
		}
		entries[cp] = f
	}
	for _, p := range c.whiteouts {
		cp, err := clean(p)
		if err != nil {
			return nil, err
		}
		entries[path.Join(path.Dir(cp), whiteoutPrefix+path.Base(cp))] = File{}
	}
	for _, p := range c.opaque {
		cp, err := clean(p)
		if err != nil {
			return nil, err
		}
		entries[cp+"/"+opaqueMarker] = File{}
	}
	for p := range entries {
		addParents(p)
	}
	names := make([]string, 0, len(entries))
	for p := range entries {
		names = append(names, p)
	}
	slices.Sort(names)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range names {
		f := entries[p]
		hdr := header(p, f)
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar header %s: %w", p, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := io.WriteString(tw, f.Content); err != nil {
				return nil, fmt.Errorf("tar content %s: %w", p, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("close tar: %w", err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestSpeed), tarball.WithCompressedCaching)
	if err != nil {
		return nil, fmt.Errorf("layer from tar: %w", err)
	}
	return l, nil
}

func header(p string, f File) *tar.Header {
	h := &tar.Header{
		Name: p, Uid: f.Uid, Gid: f.Gid, ModTime: created,
		Mode: int64(f.Mode.Perm()),
	}
	switch {
	case f.Symlink != "":
		h.Typeflag, h.Linkname = tar.TypeSymlink, f.Symlink
		if h.Mode == 0 {
			h.Mode = 0o777
		}
	case f.Dir:
		h.Typeflag, h.Name = tar.TypeDir, p+"/"
		if h.Mode == 0 {
			h.Mode = 0o755
		}
	default:
		h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Content))
		if h.Mode == 0 {
			h.Mode = 0o644
		}
	}
	if f.Mode&os.ModeSetuid != 0 {
		h.Mode |= 0o4000
	}
	if f.Mode&os.ModeSetgid != 0 {
		h.Mode |= 0o2000
	}
	if f.Mode&os.ModeSticky != 0 {
		h.Mode |= 0o1000
	}
	return h
}
