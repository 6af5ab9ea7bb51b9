package rpmostree

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// A reader for exactly one GVariant shape: a serialized a{sv} (normal form, little endian)
// whose string values are wanted. That is what rpm-ostreed writes to its driver file
// (driver.go). Values of any other type are skipped without being parsed; anything that does
// not frame correctly is an error, never a panic (FuzzParseUpdateDriver).
//
// The serialization, for reference (GVariant specification, "Serialisation"):
//   - a container's framing offsets are little-endian integers of the smallest of 0, 1, 2, 4 or
//     8 bytes that can hold the container's total size;
//   - an array of variable-size elements is the elements, each aligned to the element type's
//     alignment, followed by one framing offset per element: the end of that element;
//   - a dict entry {sv} is the key (NUL-terminated), padding to 8, the variant, then one framing
//     offset: the end of the key (only the last member of a tuple goes without one);
//   - a variant is the value's bytes, a NUL, and the value's type string.

// errGVariant is the base of every framing error.
var errGVariant = errors.New("gvariant")

// dictEntryAlign is the alignment of {sv}: a variant aligns to 8.
const dictEntryAlign = 8

// decodeStringVardict returns the string-typed entries of a serialized a{sv}. A later entry
// with the same key replaces an earlier one, as GVariantDict does.
func decodeStringVardict(data []byte) (map[string]string, error) {
	entries, err := arrayElements(data, dictEntryAlign)
	if err != nil {
		return nil, fmt.Errorf("a{sv}: %w", err)
	}
	out := make(map[string]string, len(entries))
	for i, e := range entries {
		key, sig, value, err := dictEntry(e)
		if err != nil {
			return nil, fmt.Errorf("a{sv} entry %d: %w", i, err)
		}
		if sig != "s" {
			continue
		}
		s, err := gvString(value)
		if err != nil {
			return nil, fmt.Errorf("a{sv} entry %q: %w", key, err)
		}
		out[key] = s
	}
	return out, nil
}

// arrayElements splits an array of variable-size elements into its elements.
func arrayElements(data []byte, align int) ([][]byte, error) {
	if len(data) == 0 {
		return nil, nil
	}
	size := offsetSize(len(data))
	if len(data) < size {
		return nil, fmt.Errorf("%w: %d bytes cannot hold a framing offset", errGVariant, len(data))
	}
	table := readOffset(data[len(data)-size:], size)
	if table > len(data)-size || (len(data)-table)%size != 0 {
		return nil, fmt.Errorf("%w: framing offset table at %d does not fit %d bytes", errGVariant, table, len(data))
	}
	n := (len(data) - table) / size
	out := make([][]byte, 0, n)
	start := 0
	for i := range n {
		end := readOffset(data[table+i*size:], size)
		start = alignUp(start, align)
		if start > end || end > table {
			return nil, fmt.Errorf("%w: element %d spans %d..%d of %d", errGVariant, i, start, end, table)
		}
		out = append(out, data[start:end])
		start = end
	}
	return out, nil
}

// dictEntry splits a serialized {sv} into its key and the variant's type and value bytes.
func dictEntry(e []byte) (key, sig string, value []byte, err error) {
	size := offsetSize(len(e))
	if len(e) < size || size == 0 {
		return "", "", nil, fmt.Errorf("%w: dict entry of %d bytes", errGVariant, len(e))
	}
	body := e[:len(e)-size]
	keyEnd := readOffset(e[len(e)-size:], size)
	if keyEnd > len(body) {
		return "", "", nil, fmt.Errorf("%w: key ends at %d of %d", errGVariant, keyEnd, len(body))
	}
	key, err = gvString(body[:keyEnd])
	if err != nil {
		return "", "", nil, fmt.Errorf("key: %w", err)
	}
	start := alignUp(keyEnd, dictEntryAlign)
	if start > len(body) {
		return "", "", nil, fmt.Errorf("%w: value of %q starts at %d of %d", errGVariant, key, start, len(body))
	}
	sig, value, err = splitVariant(body[start:])
	if err != nil {
		return "", "", nil, fmt.Errorf("value of %q: %w", key, err)
	}
	return key, sig, value, nil
}

// splitVariant splits a serialized variant into its type string and value bytes (not parsed).
func splitVariant(v []byte) (string, []byte, error) {
	nul := bytes.LastIndexByte(v, 0)
	if nul < 0 {
		return "", nil, fmt.Errorf("%w: variant without a type", errGVariant)
	}
	sig := string(v[nul+1:])
	if sig == "" {
		return "", nil, fmt.Errorf("%w: variant with an empty type", errGVariant)
	}
	return sig, v[:nul], nil
}

// gvString decodes a serialized string: UTF-8, NUL-terminated, no NUL inside.
func gvString(b []byte) (string, error) {
	if len(b) == 0 || b[len(b)-1] != 0 {
		return "", fmt.Errorf("%w: string not NUL-terminated", errGVariant)
	}
	s := b[:len(b)-1]
	if bytes.IndexByte(s, 0) >= 0 || !utf8.Valid(s) {
		return "", fmt.Errorf("%w: string with a NUL or invalid UTF-8", errGVariant)
	}
	return string(s), nil
}

// offsetSize is the size of a framing offset in a container of n bytes.
func offsetSize(n int) int {
	switch {
	case n == 0:
		return 0
	case n <= 0xff:
		return 1
	case n <= 0xffff:
		return 2
	case uint64(n) <= 0xffffffff:
		return 4
	}
	return 8
}

// readOffset reads a little-endian framing offset of size bytes from b. An offset beyond the
// int range (only possible with 8-byte offsets) is clamped to the largest int, which every
// bounds check rejects.
func readOffset(b []byte, size int) int {
	var v uint64
	switch size {
	case 1:
		v = uint64(b[0])
	case 2:
		v = uint64(binary.LittleEndian.Uint16(b))
	case 4:
		v = uint64(binary.LittleEndian.Uint32(b))
	default:
		v = binary.LittleEndian.Uint64(b)
	}
	if v > uint64(int(^uint(0)>>1)) {
		return int(^uint(0) >> 1)
	}
	return int(v)
}

func alignUp(n, a int) int { return (n + a - 1) / a * a }
