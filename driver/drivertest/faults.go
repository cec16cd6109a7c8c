package drivertest

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// CheckDecoded fails t unless m and err keep the promise every driver's
// envelope decoder makes for any input, however broken (see
// driver.Delivery.Err): a message is always returned, the error matches
// driver.ErrMalformed, and a message decoded without error is a valid
// envelope. Fuzz targets of the drivers call it on whatever they decoded.
func CheckDecoded(t testing.TB, m *driver.Message, err error) {
	t.Helper()
	switch {
	case m == nil:
		t.Fatalf("decoder returned a nil message (error %v)", err)
	case err != nil && !errors.Is(err, driver.ErrMalformed):
		t.Fatalf("decoder error %v (%T) does not match driver.ErrMalformed", err, err)
	case err == nil && m.Validate() != nil:
		t.Fatalf("decoder accepted an invalid envelope: %v", m.Validate())
	}
}

// Reencodable reports whether a message that a decoder accepted can be
// published as it is: only then must it survive encoding and decoding again.
func Reencodable(m *driver.Message) bool {
	return driver.CheckEnvelope([]*driver.Message{m}) == nil
}

// CheckRedecoded fails t unless again, the message first encoded and
// decoded once more (with error err), is the same envelope as first.
func CheckRedecoded(t testing.TB, first, again *driver.Message, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("a decoded envelope, encoded again, does not decode: %v\n\tfirst: %+v", err, first)
	}
	if diffs := diffMessage(first, again); len(diffs) > 0 {
		t.Fatalf("a decoded envelope changed when encoded and decoded again:\n\t%s", strings.Join(diffs, "\n\t"))
	}
}

// FuzzSeeds returns envelopes that exercise every part of a binding: all
// attributes, extensions, a key, multi-valued headers and binary data; JSON
// data in structured content mode; no data at all; non-ASCII text. Fuzz
// targets encode them with their driver's encoder as their first seeds, so
// that the seeds follow the encoder as it changes.
func FuzzSeeds() []*driver.Message {
	full := &driver.Message{
		ID: "id-1", Source: "/fuzz/seed", Type: "fuzz.full", Subject: "order-1",
		Time:            time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		DataContentType: "application/octet-stream", DataSchema: "https://example.com/s.json",
		CorrelationID: "corr-1", CausationID: "cause-1",
		TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v",
		ReplyTo: "reply.instance-1", Key: "key-1",
		Extensions: map[string]string{"tenant": "acme", "priority": "7"},
		Header:     map[string][]string{"X-Trace": {"a", "b"}, "Retry-Count": {"2"}},
		Data:       []byte{0, 1, 2, 0xff, '\n', '"', '%'},
	}
	structured := &driver.Message{
		ID: "id-2", Source: "/fuzz/seed", Type: "fuzz.structured", DataContentType: "application/json",
		Mode: driver.Structured, Key: "k2", Header: map[string][]string{"X-Free": {"yes"}},
		Data: []byte(`{"amount":10,"items":["a","b"]}`),
	}
	empty := &driver.Message{ID: "id-3", Source: "s", Type: "fuzz.empty"}
	text := &driver.Message{
		ID: "идентификатор", Source: "urn:fuzz:源", Type: "fuzz.text", DataContentType: "text/plain; charset=utf-8",
		Extensions: map[string]string{"note": "50% \"quoted\" é"}, Data: []byte("héllo wörld"),
	}
	return []*driver.Message{full, structured, empty, text}
}

// FuzzHeaders reads a fuzzer's string as name/value pairs, one a line, the
// name before the first colon: how the fuzz targets of drivers with text
// headers turn one fuzzed string into a header map.
func FuzzHeaders(s string) [][2]string {
	var pairs [][2]string
	for line := range strings.SplitSeq(s, "\n") {
		name, value, _ := strings.Cut(line, ":")
		pairs = append(pairs, [2]string{name, value})
	}
	return pairs
}

// FuzzHeaderText is the inverse of FuzzHeaders, for seeds.
func FuzzHeaderText(h map[string][]string) string {
	var b strings.Builder
	for _, name := range slices.Sorted(maps.Keys(h)) {
		for _, v := range h[name] {
			if b.Len() > 0 {
				b.WriteByte('\n')
			}
			b.WriteString(name + ":" + v)
		}
	}
	return b.String()
}
