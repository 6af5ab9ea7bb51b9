package backend

import (
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"sync"

	"github.com/godbus/dbus/v5"
)

// commitInfo is what the stand-in needs from an ostree commit object.
type commitInfo struct {
	Checksum  string
	Metadata  map[string]dbus.Variant // the commit's a{sv}, with real types
	Subject   string
	Timestamp uint64 // seconds since the epoch
}

// metaString returns a string-typed metadata value, or "".
func (c commitInfo) metaString(key string) string {
	v, ok := c.Metadata[key]
	if !ok {
		return ""
	}
	s, _ := v.Value().(string)
	return s
}

// commitType is OSTREE_COMMIT_GVARIANT_FORMAT: metadata, parent, related
// objects, subject, body, timestamp (big endian), root dirtree, root dirmeta.
const commitType = "(a{sv}aya(say)sstayay)"

// commitReader reads commit objects straight from a repository's objects/
// directory. Commits are immutable, so decoded ones are cached by checksum.
type commitReader struct {
	repo  string
	mu    sync.Mutex
	cache map[string]commitInfo
}

func newCommitReader(repo string) *commitReader {
	return &commitReader{repo: repo, cache: map[string]commitInfo{}}
}

func (r *commitReader) read(csum string) (commitInfo, error) {
	r.mu.Lock()
	c, ok := r.cache[csum]
	r.mu.Unlock()
	if ok {
		return c, nil
	}
	if len(csum) != 64 {
		return commitInfo{}, fmt.Errorf("read commit: bad checksum %q", csum)
	}
	path := filepath.Join(r.repo, "objects", csum[:2], csum[2:]+".commit")
	data, err := os.ReadFile(path)
	if err != nil {
		return commitInfo{}, fmt.Errorf("read commit %s: %w", csum, err)
	}
	c, err = parseCommit(csum, data)
	if err != nil {
		return commitInfo{}, err
	}
	r.mu.Lock()
	r.cache[csum] = c
	r.mu.Unlock()
	return c, nil
}

func parseCommit(csum string, data []byte) (commitInfo, error) {
	t, _, err := parseGVType(commitType)
	if err != nil {
		return commitInfo{}, err
	}
	members, err := t.tupleMembers(data)
	if err != nil {
		return commitInfo{}, fmt.Errorf("decode commit %s: %w", csum, err)
	}
	c := commitInfo{
		Checksum:  csum,
		Metadata:  members[0].Interface().(map[string]dbus.Variant),
		Subject:   members[3].Interface().(string),
		Timestamp: bits.ReverseBytes64(members[5].Interface().(uint64)),
	}
	return c, nil
}
