package redisbus

import (
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// entryFields are a stream entry's fields as the client reads them: every
// value a string.
func entryFields(args []any) []string {
	fields := make([]string, len(args))
	for i, a := range args {
		switch v := a.(type) {
		case string:
			fields[i] = v
		case []byte:
			fields[i] = string(v)
		}
	}
	return fields
}

// FuzzDecode: any stream entry (fields separated by NUL in the fuzzed
// string) decodes without panic into a message and an error matching
// ErrMalformed, or into a valid envelope that encodes and decodes again
// unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		f.Add(strings.Join(entryFields(appendFields(nil, m)), "\x00"))
	}
	f.Fuzz(func(t *testing.T, entry string) {
		m, err := decode(strings.Split(entry, "\x00"))
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		again, err := decode(entryFields(appendFields(nil, m)))
		drivertest.CheckRedecoded(t, m, again, err)
	})
}

// FuzzDecodeBroadcast: the same for a Pub/Sub payload.
func FuzzDecodeBroadcast(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		p, err := encodeBroadcast(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(p))
	}
	f.Fuzz(func(t *testing.T, payload string) {
		m, err := decodeBroadcast(payload)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		p, err := encodeBroadcast(m)
		if err != nil {
			t.Fatal(err)
		}
		again, err := decodeBroadcast(string(p))
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
