package redisbus

import (
	"slices"
	"strings"
	"testing"
	"time"

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

// TestAppendEntry: the arguments the driver's XADD writes (pointers, times
// and data arguments) are the fields appendFields makes, for every seed
// message with a time (local or UTC) and extensions.
func TestAppendEntry(t *testing.T) {
	seeds := drivertest.FuzzSeeds()
	local := *seeds[0]
	local.Time = time.Date(2026, 11, 27, 20, 0, 0, 123456789, time.FixedZone("X", 3600))
	local.Extensions = map[string]string{"a": "1", "b": "2"}
	local.Header = map[string][]string{"H": {"x", "y"}}
	for _, m := range append(seeds, &local) {
		var b argBuilder
		b.appendEntry(m)
		got := make([]string, len(b.args))
		for i, a := range b.args {
			switch v := a.(type) {
			case *string:
				got[i] = *v
			case *time.Time:
				got[i] = v.Format(time.RFC3339Nano)
			case *dataArg:
				d, _ := v.MarshalBinary()
				got[i] = string(d)
			default:
				got[i] = entryFields([]any{v})[0]
			}
		}
		want := entryFields(appendFields(nil, m))
		if len(m.Extensions) > 1 {
			// Map order: compare as sets of pairs.
			sortPairs(got)
			sortPairs(want)
		}
		if !slices.Equal(got, want) {
			t.Errorf("appendEntry wrote %q, want %q", got, want)
		}
	}
}

func sortPairs(fields []string) {
	pairs := make([][2]string, 0, len(fields)/2)
	for i := 0; i+1 < len(fields); i += 2 {
		pairs = append(pairs, [2]string{fields[i], fields[i+1]})
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	for i, p := range pairs {
		fields[2*i], fields[2*i+1] = p[0], p[1]
	}
}
