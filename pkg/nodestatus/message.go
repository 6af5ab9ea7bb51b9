package nodestatus

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

const ellipsis = "…"

// Truncate makes msg fit the protocol's message rules: valid UTF-8, one line (control characters
// become spaces, surrounding space is trimmed) and at most max bytes, cut on a rune boundary and
// marked with "…" when shortened. max below the ellipsis' length cuts without the mark.
func Truncate(msg string, max int) string {
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	msg = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, msg)
	msg = strings.TrimSpace(msg)
	if len(msg) <= max {
		return msg
	}
	if max <= 0 {
		return ""
	}
	mark := ellipsis
	if max < len(mark) {
		mark = ""
	}
	cut := max - len(mark)
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut] + mark
}
