package server

import "encoding/binary"

// A writer for one GVariant shape, an a{sv} of strings, serialized as GLib does (normal form,
// little endian): each dict entry is the key and a NUL, zero padding to 8, the variant (the
// string, a NUL, a NUL and the type "s"), then the end of the key as a framing offset; the
// array is the entries, each padded to 8, then the end of every entry as framing offsets. A
// container's framing offsets take the fewest bytes (1, 2, 4, 8) that can address the whole
// container, offsets included.

// encodeStringVardict serializes pairs (key, string value) in order.
func encodeStringVardict(pairs [][2]string) []byte {
	var body []byte
	ends := make([]int, 0, len(pairs))
	for _, p := range pairs {
		body = pad(body, 8)
		body = append(body, encodeStringEntry(p[0], p[1])...)
		ends = append(ends, len(body))
	}
	return appendOffsets(body, ends)
}

// encodeStringEntry serializes one {sv} whose value is a string.
func encodeStringEntry(key, value string) []byte {
	e := append([]byte(key), 0)
	keyEnd := len(e)
	e = pad(e, 8)
	e = append(e, value...)
	e = append(e, 0, 0, 's')
	return appendOffsets(e, []int{keyEnd})
}

// appendOffsets appends framing offsets sized for the resulting container.
func appendOffsets(body []byte, offsets []int) []byte {
	size := 1
	for ; size < 8; size *= 2 {
		if uint64(len(body)+len(offsets)*size) < uint64(1)<<(8*size) {
			break
		}
	}
	if len(body) == 0 && len(offsets) == 0 {
		return body
	}
	for _, o := range offsets {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(o))
		body = append(body, b[:size]...)
	}
	return body
}

func pad(b []byte, align int) []byte {
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	return b
}
