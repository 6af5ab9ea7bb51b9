package nspawn

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// aptSource is one `deb` entry of the machine's apt configuration.
type aptSource struct {
	URI    string
	Suites []string
}

// AptMirror returns the URI of the first `deb` source in the machine's apt configuration
// (aptDir/sources.list, then aptDir/sources.list.d/*.list and *.sources in name order)
// that serves suite, e.g. ("/etc/apt", "bookworm") → "http://deb.debian.org/debian".
// The network of the test machine reaches only that mirror, so it is never hard-coded.
func AptMirror(aptDir, suite string) (string, error) {
	files := []string{filepath.Join(aptDir, "sources.list")}
	for _, pat := range []string{"*.list", "*.sources"} {
		m, err := filepath.Glob(filepath.Join(aptDir, "sources.list.d", pat))
		if err != nil {
			return "", fmt.Errorf("listing apt sources: %w", err)
		}
		files = append(files, m...)
	}
	slices.Sort(files[1:])
	var read []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("reading apt sources: %w", err)
		}
		read = append(read, f)
		var srcs []aptSource
		if strings.HasSuffix(f, ".sources") {
			srcs = parseDeb822Sources(data)
		} else {
			srcs = parseOneLineSources(data)
		}
		for _, s := range srcs {
			if slices.Contains(s.Suites, suite) {
				return s.URI, nil
			}
		}
	}
	return "", fmt.Errorf("no apt `deb` source for suite %q in %v", suite, read)
}

// parseOneLineSources parses sources.list lines: `deb [options] URI suite [component...]`.
func parseOneLineSources(data []byte) []aptSource {
	var out []aptSource
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "deb" {
			continue
		}
		f = f[1:]
		if strings.HasPrefix(f[0], "[") {
			i := slices.IndexFunc(f, func(s string) bool { return strings.HasSuffix(s, "]") })
			if i < 0 || len(f) < i+3 {
				continue
			}
			f = f[i+1:]
		}
		out = append(out, aptSource{URI: strings.TrimSuffix(f[0], "/"), Suites: []string{f[1]}})
	}
	return out
}

// parseDeb822Sources parses a deb822 .sources file: stanzas separated by blank lines with
// Types:, URIs: and Suites: fields (each URI is paired with every suite). Stanzas with
// `Enabled: no` are skipped.
func parseDeb822Sources(data []byte) []aptSource {
	var out []aptSource
	fields := map[string]string{}
	flush := func() {
		if len(fields) > 0 && slices.Contains(strings.Fields(fields["types"]), "deb") &&
			!strings.EqualFold(fields["enabled"], "no") {
			for _, uri := range strings.Fields(fields["uris"]) {
				out = append(out, aptSource{URI: strings.TrimSuffix(uri, "/"), Suites: strings.Fields(fields["suites"])})
			}
		}
		fields = map[string]string{}
	}
	last := ""
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.TrimSpace(line) == "":
			flush()
		case strings.HasPrefix(line, "#"):
		case line[0] == ' ' || line[0] == '\t': // continuation of the previous field
			if last != "" {
				fields[last] += " " + strings.TrimSpace(line)
			}
		default:
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			last = strings.ToLower(strings.TrimSpace(k))
			fields[last] = strings.TrimSpace(v)
		}
	}
	flush()
	return out
}
