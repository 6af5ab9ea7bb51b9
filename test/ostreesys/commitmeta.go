package ostreesys

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// commitCache maps checksum → Commit. Commits are content-addressed and
// immutable, so the cache is valid across sysroots.
var commitCache sync.Map

// Commit is what ReadCommit extracts from a commit object.
type Commit struct {
	Checksum  string
	Metadata  map[string]string // string-valued metadata only
	Subject   string
	Timestamp time.Time
}

// ReadCommit reads a commit's metadata via `ostree show --raw` and parses
// the GVariant text form (metadata a{sv}, parent, related, subject, body,
// timestamp, …).
func (s *Sysroot) ReadCommit(ctx context.Context, rev string) (Commit, error) {
	if c, ok := commitCache.Load(rev); ok {
		return copyCommit(c.(Commit)), nil
	}
	out, err := run(ctx, "ostree", "show", "--repo="+s.RepoPath(), "--raw", rev)
	if err != nil {
		return Commit{}, err
	}
	c, err := parseRawCommit(string(out))
	if err != nil {
		return Commit{}, fmt.Errorf("ostreesys: commit %s: %w", rev, err)
	}
	if isChecksum(c.Checksum) {
		commitCache.Store(c.Checksum, copyCommit(c))
	}
	return c, nil
}

func copyCommit(c Commit) Commit {
	md := make(map[string]string, len(c.Metadata))
	for k, v := range c.Metadata {
		md[k] = v
	}
	c.Metadata = md
	return c
}

func parseRawCommit(text string) (Commit, error) {
	var c Commit
	first, rest, _ := strings.Cut(text, "\n")
	if sum, ok := strings.CutPrefix(first, "commit "); ok {
		c.Checksum = strings.TrimSpace(sum)
	}
	rest = strings.TrimSpace(rest)
	if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
		return c, fmt.Errorf("unexpected raw commit %q", text)
	}
	fields := splitTop(rest[1 : len(rest)-1])
	if len(fields) < 6 {
		return c, fmt.Errorf("raw commit has %d fields: %q", len(fields), rest)
	}
	md, err := parseStringDict(fields[0])
	if err != nil {
		return c, err
	}
	c.Metadata = md
	if sub, ok := parseGVString(fields[3]); ok {
		c.Subject = sub
	}
	ts := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(fields[5]), "uint64"))
	secs, err := strconv.ParseUint(ts, 10, 64)
	if err != nil {
		return c, fmt.Errorf("commit timestamp %q: %w", fields[5], err)
	}
	c.Timestamp = time.Unix(int64(secs), 0).UTC()
	return c, nil
}

// parseDict parses a GVariant text dictionary `{'k': v, …}` into key → raw
// value text.
func parseDict(s string) (map[string]string, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "@a{sv} ")
	if !strings.HasPrefix(s, "{") || !strings.HasSuffix(s, "}") {
		return nil, fmt.Errorf("not a dictionary: %q", s)
	}
	out := map[string]string{}
	for _, entry := range splitTop(s[1 : len(s)-1]) {
		k, v, ok := cutTop(entry, ':')
		if !ok {
			continue
		}
		if key, ok := parseGVString(k); ok {
			out[key] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

// parseStringDict parses `{'k': <'v'>, 'n': <[...]>}` keeping string values.
func parseStringDict(s string) (map[string]string, error) {
	raw, err := parseDict(s)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for k, v := range raw {
		if strings.HasPrefix(v, "<") && strings.HasSuffix(v, ">") {
			if str, ok := parseGVString(v[1 : len(v)-1]); ok {
				out[k] = str
			}
		}
	}
	return out, nil
}

// parseGVString parses a GVariant text string literal ('…' or "…").
func parseGVString(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) < 2 || (s[0] != '\'' && s[0] != '"') || s[len(s)-1] != s[0] {
		return "", false
	}
	return unescapeGVariantString(s[1 : len(s)-1]), true
}

func unescapeGVariantString(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch s[i] {
		case 'n':
			b.WriteByte('\n')
		case 't':
			b.WriteByte('\t')
		case 'r':
			b.WriteByte('\r')
		default:
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// splitTop splits on commas outside quotes and brackets.
func splitTop(s string) []string {
	var out []string
	for {
		head, tail, ok := cutTop(s, ',')
		if strings.TrimSpace(head) != "" {
			out = append(out, strings.TrimSpace(head))
		}
		if !ok {
			return out
		}
		s = tail
	}
}

// cutTop cuts s at the first sep outside quotes and ([{< nesting.
func cutTop(s string, sep byte) (string, string, bool) {
	depth := 0
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == '\\' {
				i++
			} else if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '(' || c == '[' || c == '{' || c == '<':
			depth++
		case c == ')' || c == ']' || c == '}' || c == '>':
			depth--
		case c == sep && depth == 0:
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}
