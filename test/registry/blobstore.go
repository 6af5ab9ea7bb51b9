package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// diskBlobs stores blobs as plain files under dir/<algorithm>/<hex>.
//
// Unlike ggcr's NewDiskBlobHandler it does not re-hash a blob on every
// Stat: a blob tampered with on disk (see Registry.BlobPath) is served as
// is, the way a real registry with a corrupted backend would serve it.
type diskBlobs struct {
	dir string
}

var (
	_ ggcr.BlobStatHandler   = diskBlobs{}
	_ ggcr.BlobPutHandler    = diskBlobs{}
	_ ggcr.BlobDeleteHandler = diskBlobs{}
)

func (d diskBlobs) path(h v1.Hash) string {
	return filepath.Join(d.dir, h.Algorithm, h.Hex)
}

func (d diskBlobs) Stat(_ context.Context, _ string, h v1.Hash) (int64, error) {
	fi, err := os.Stat(d.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return 0, ggcr.ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("stat blob %s: %w", h, err)
	}
	return fi.Size(), nil
}

func (d diskBlobs) Get(_ context.Context, _ string, h v1.Hash) (io.ReadCloser, error) {
	f, err := os.Open(d.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ggcr.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("open blob %s: %w", h, err)
	}
	return f, nil
}

// Put streams rc (which ggcr wraps in a digest verifier) to a temporary file
// and renames it into place only when the whole body verified.
func (d diskBlobs) Put(_ context.Context, _ string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	if err := os.MkdirAll(filepath.Join(d.dir, h.Algorithm), 0o755); err != nil {
		return fmt.Errorf("create blob dir: %w", err)
	}
	f, err := os.CreateTemp(d.dir, "upload-*")
	if err != nil {
		return fmt.Errorf("create upload file: %w", err)
	}
	tmp := f.Name()
	_, copyErr := io.Copy(f, rc)
	closeErr := f.Close()
	if copyErr != nil || closeErr != nil {
		os.Remove(tmp)
		if copyErr != nil {
			// Keep the error chain: ggcr maps verify.Error to DIGEST_INVALID.
			return copyErr
		}
		return fmt.Errorf("close upload file: %w", closeErr)
	}
	if err := os.Rename(tmp, d.path(h)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("store blob %s: %w", h, err)
	}
	return nil
}

func (d diskBlobs) Delete(_ context.Context, _ string, h v1.Hash) error {
	err := os.Remove(d.path(h))
	if errors.Is(err, os.ErrNotExist) {
		return ggcr.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete blob %s: %w", h, err)
	}
	return nil
}
