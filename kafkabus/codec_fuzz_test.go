package kafkabus

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// FuzzDecode: any record — key, value, headers — in either content mode
// decodes without panic into a message and an error matching ErrMalformed,
// or into a valid envelope that encodes and decodes again unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		r := encode("events.fuzz", m)
		h := map[string][]string{}
		for _, rh := range r.Headers {
			h[rh.Key] = append(h[rh.Key], string(rh.Value))
		}
		f.Add(r.Key, drivertest.FuzzHeaderText(h), r.Value)
	}
	f.Fuzz(func(t *testing.T, key []byte, headers string, value []byte) {
		r := &kgo.Record{Topic: "events.fuzz", Key: key, Value: value}
		for _, kv := range drivertest.FuzzHeaders(headers) {
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: kv[0], Value: []byte(kv[1])})
		}
		m, _, err := decode(r)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		again, _, err := decode(encode("events.fuzz", m))
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
