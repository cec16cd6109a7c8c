package redisbus

import (
	"errors"
	"io"
	"strings"
	"sync"
)

// The driver reads XREADGROUP's reply as raw RESP bytes (go-redis's
// RawWriteToCmd, into a pooled buffer) and parses the
// entries itself: go-redis's generic reader makes a string and an
// interface value of every field of every entry, which was most of the
// allocations and a quarter of the CPU time of a consumer. Here an entry
// costs two allocations: one string holding its id and every field value
// but the data (the fields the driver knows are named by constants), and
// the data's own slice, so that a message kept by the application keeps
// only its own bytes.

// replyBuffer collects a raw reply. Buffers are pooled from one read to the
// next (nothing parsed from one points into it), so that idle subscriptions
// hold none.
type replyBuffer struct{ b []byte }

var replyPool = sync.Pool{New: func() any { return new(replyBuffer) }}

// maxKeptReply bounds a buffer given back to the pool.
const maxKeptReply = 4 << 20

func getReply() *replyBuffer {
	w := replyPool.Get().(*replyBuffer)
	w.b = w.b[:0]
	return w
}

func putReply(w *replyBuffer) {
	if cap(w.b) <= maxKeptReply {
		replyPool.Put(w)
	}
}

func (w *replyBuffer) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// ReadFrom reads r to its end into the buffer, which io.CopyN (go-redis's
// copy of a bulk string) calls instead of copying through a buffer of its
// own.
func (w *replyBuffer) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	for {
		if len(w.b) == cap(w.b) {
			w.b = append(w.b, 0)[:len(w.b)]
		}
		m, err := r.Read(w.b[len(w.b):cap(w.b)])
		w.b = w.b[:len(w.b)+m]
		n += int64(m)
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// errRESP reports a reply that is not the shape this parser knows.
var errRESP = errors.New("unexpected XREADGROUP reply")

// respReader walks a RESP2 or RESP3 reply held in b.
type respReader struct {
	b   []byte
	pos int
}

// header reads one line (a type byte and its text, without CRLF).
func (r *respReader) header() (byte, []byte, error) {
	if r.pos >= len(r.b) {
		return 0, nil, errRESP
	}
	i := r.pos + 1 // after the type byte
	for ; i+1 < len(r.b); i++ {
		if r.b[i] == '\r' && r.b[i+1] == '\n' {
			t, line := r.b[r.pos], r.b[r.pos+1:i]
			r.pos = i + 2
			return t, line, nil
		}
	}
	return 0, nil, errRESP
}

// aggregate reads the header of an array (or of a map, counted in pairs
// when typ is '%'); it returns -1 for a null.
func (r *respReader) aggregate() (typ byte, n int, err error) {
	t, line, err := r.header()
	if err != nil {
		return 0, 0, err
	}
	switch t {
	case '_':
		return t, -1, nil
	case '*', '%':
		n, ok := respInt(line)
		// Every element takes at least 3 bytes ("_\r\n"): a count that
		// the rest of the reply cannot hold is refused before anything is
		// allocated for it.
		if !ok || n > (len(r.b)-r.pos)/3 {
			return 0, 0, errRESP
		}
		return t, n, nil
	}
	return 0, 0, errRESP
}

// bulk reads a bulk string; it returns the start and end of its bytes in b.
func (r *respReader) bulk() (int, int, error) {
	t, line, err := r.header()
	if err != nil || t != '$' {
		return 0, 0, errRESP
	}
	n, ok := respInt(line)
	if !ok || n < 0 || len(r.b)-r.pos < n+2 || r.b[r.pos+n] != '\r' || r.b[r.pos+n+1] != '\n' {
		return 0, 0, errRESP
	}
	start := r.pos
	r.pos += n + 2
	return start, start + n, nil
}

// respInt reads a length: digits, or -1 for a null.
func respInt(b []byte) (int, bool) {
	if string(b) == "-1" {
		return -1, true
	}
	if len(b) == 0 || len(b) > 9 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// isErrorReply reports whether raw is an error reply ("-NOGROUP ...",
// "-MOVED ...", a RESP3 blob error).
func isErrorReply(raw []byte) bool {
	return len(raw) > 0 && (raw[0] == '-' || raw[0] == '!')
}

// parseXRead reads the entries of an XREADGROUP reply for one stream:
// RESP2's [[key, entries]], RESP3's {key: entries}, or a null when nothing
// came. An entry without fields (deleted since) is skipped.
func parseXRead(raw []byte) ([]entry, error) {
	r := &respReader{b: raw}
	typ, n, err := r.aggregate()
	if err != nil || n <= 0 {
		return nil, err
	}
	var out []entry
	for range n {
		if typ == '*' {
			if _, pair, err := r.aggregate(); err != nil || pair != 2 {
				return nil, errRESP
			}
		}
		if _, _, err := r.bulk(); err != nil { // the stream's key
			return nil, err
		}
		if out, err = r.entries(out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// span is where a field's name and value lie in the reply.
type span struct {
	name, value [2]int
	data        bool // a data field, not carried in the entry's fields
}

// entries appends the entries of an array of [id, [field, value...]].
func (r *respReader) entries(out []entry) ([]entry, error) {
	_, n, err := r.aggregate()
	if err != nil || n <= 0 {
		return out, err
	}
	if out == nil {
		out = make([]entry, 0, n)
	}
	var (
		spans  []span
		fields []string // a slab for the fields of every entry
	)
	for left := n; left > 0; left-- {
		entryStart := r.pos
		if _, parts, err := r.aggregate(); err != nil || parts != 2 {
			return nil, errRESP
		}
		idStart, idEnd, err := r.bulk()
		if err != nil {
			return nil, err
		}
		_, nf, err := r.aggregate()
		if err != nil || (nf >= 0 && nf%2 != 0) {
			return nil, errRESP
		}
		spans = spans[:0]
		size := idEnd - idStart
		dataAt := -1
		for i := 0; i < nf/2; i++ {
			var sp span
			if sp.name[0], sp.name[1], err = r.bulk(); err != nil {
				return nil, err
			}
			if sp.value[0], sp.value[1], err = r.bulk(); err != nil {
				return nil, err
			}
			name := r.b[sp.name[0]:sp.name[1]]
			if string(name) == fieldData {
				// The last data field is the data, as in go-redis's
				// reply that a reclaim reads; none is a field.
				dataAt = len(spans)
				sp.data = true
			} else {
				size += sp.value[1] - sp.value[0]
				if knownField(name) == "" {
					size += len(name)
				}
			}
			spans = append(spans, sp)
		}
		if nf <= 0 {
			continue // deleted since it was added
		}
		if cap(fields)-len(fields) < 2*len(spans) {
			// Room for the entries left, as many as the rest of the reply
			// can hold if they are the size of this one.
			more := min(left-1, (len(r.b)-r.pos)/(r.pos-entryStart))
			fields = make([]string, 0, 2*len(spans)*(1+more))
		}
		// One string for the id and the values (and unknown names).
		var sb strings.Builder
		sb.Grow(size)
		sb.Write(r.b[idStart:idEnd])
		for _, sp := range spans {
			if sp.data {
				continue
			}
			if name := r.b[sp.name[0]:sp.name[1]]; knownField(name) == "" {
				sb.Write(name)
			}
			sb.Write(r.b[sp.value[0]:sp.value[1]])
		}
		s := sb.String()
		e := entry{id: s[:idEnd-idStart]}
		at := len(e.id)
		start := len(fields)
		for _, sp := range spans {
			if sp.data {
				continue
			}
			name := knownField(r.b[sp.name[0]:sp.name[1]])
			if name == "" {
				l := sp.name[1] - sp.name[0]
				name = s[at : at+l]
				at += l
			}
			l := sp.value[1] - sp.value[0]
			fields = append(fields, name, s[at:at+l])
			at += l
		}
		e.fields = fields[start:len(fields):len(fields)]
		if dataAt >= 0 {
			sp := spans[dataAt]
			e.data = append(make([]byte, 0, sp.value[1]-sp.value[0]), r.b[sp.value[0]:sp.value[1]]...)
			e.hasData = true
		}
		out = append(out, e)
	}
	return out, nil
}

// knownFields maps each of fieldNames to itself, so that a field name read
// as bytes is found without allocating.
var knownFields = func() map[string]string {
	m := make(map[string]string, len(fieldNames))
	for _, f := range fieldNames {
		m[f] = f
	}
	return m
}()

// knownField returns the field name of name when it is one every message
// may carry, without allocating, or "".
func knownField(name []byte) string { return knownFields[string(name)] }
