package hostfs

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
)

// tmpfilesRule is one tmpfiles.d line that creates something under /var.
type tmpfilesRule struct {
	typ       byte   // d, D, v, q, Q, f, F, L, C, p, c, b
	path      string // relative to /var, cleaned
	recursive bool   // C copies a whole tree: everything below counts as covered
	source    string // "file.conf:line"
}

// creating tmpfiles.d types (systemd tmpfiles.d(5)); adjust-only types
// (z, Z, t, T, h, H, a, A, x, X, r, R, e, w) create nothing.
const creatingTypes = "dDvqQfFLCpcb"

// parseTmpfiles reads the rules of one tmpfiles.d file that create paths
// under /var. Lines with specifiers (%) or globs are ignored: they cannot
// be matched without the host's context.
func parseTmpfiles(name string, data []byte) []tmpfilesRule {
	var out []tmpfilesRule
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for line := 1; sc.Scan(); line++ {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		typ := f[0][0]
		if !strings.ContainsRune(creatingTypes, rune(typ)) || strings.Trim(f[0][1:], "!-=~^+?") != "" {
			continue
		}
		p := strings.Trim(f[1], `"'`)
		if strings.ContainsAny(p, "%*?[") {
			continue
		}
		p = path.Clean(p)
		rel, ok := strings.CutPrefix(p, "/var/")
		if !ok || rel == "" {
			continue
		}
		out = append(out, tmpfilesRule{typ: typ, path: rel, recursive: typ == 'C',
			source: fmt.Sprintf("%s:%d", name, line)})
	}
	return out
}

// tmpfilesIndex answers "would tmpfiles.d create this /var path".
type tmpfilesIndex struct {
	exact     map[string]string // path → source
	recursive map[string]string // C trees
}

func (ix *tmpfilesIndex) covers(rel string) (string, bool) {
	if src, ok := ix.exact[rel]; ok {
		return src, true
	}
	for p := rel; p != "." && p != "/" && p != ""; p = path.Dir(p) {
		if src, ok := ix.recursive[p]; ok {
			return src, true
		}
	}
	return "", false
}

// loadTmpfiles reads usr/lib/tmpfiles.d/*.conf of a deployment root, within
// the byte budget. Later files do not override earlier ones: any rule that
// creates a path covers it.
func loadTmpfiles(usrLib *os.Root, b *budget) (*tmpfilesIndex, []string, error) {
	ix := &tmpfilesIndex{exact: map[string]string{}, recursive: map[string]string{}}
	if usrLib == nil {
		return ix, nil, nil
	}
	names, err := readDirNames(usrLib, "tmpfiles.d")
	if err != nil {
		return nil, nil, fmt.Errorf("tmpfiles.d: %w", err)
	}
	var files []string
	for _, n := range names {
		if !strings.HasSuffix(n, ".conf") {
			continue
		}
		p := "tmpfiles.d/" + n
		m, err := lstat(usrLib, p)
		if err != nil {
			return nil, nil, fmt.Errorf("tmpfiles.d: %w", err)
		}
		if m.Kind != KindFile || !b.visit() || !b.read(m.Size) {
			continue
		}
		data, err := readRegular(usrLib, p, m.Size)
		if err != nil {
			return nil, nil, fmt.Errorf("tmpfiles.d: %w", err)
		}
		files = append(files, n)
		for _, r := range parseTmpfiles(n, data) {
			if r.recursive {
				ix.recursive[r.path] = r.source
			}
			if _, dup := ix.exact[r.path]; !dup {
				ix.exact[r.path] = r.source
			}
		}
	}
	sort.Strings(files)
	return ix, files, nil
}
