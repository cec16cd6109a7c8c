package natsbus

import (
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// FuzzDecode: any NATS headers and body, in either content mode, decode
// without panic into a message and an error matching ErrMalformed, or into
// a valid envelope that encodes and decodes again unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		msg := encode("events.fuzz", m, true, true)
		f.Add(drivertest.FuzzHeaderText(msg.Header), msg.Data)
	}
	f.Fuzz(func(t *testing.T, headers string, body []byte) {
		h := nats.Header{}
		for _, kv := range drivertest.FuzzHeaders(headers) {
			h[kv[0]] = append(h[kv[0]], kv[1])
		}
		m, err := decode(h, body)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		out := encode("events.fuzz", m, true, true)
		again, err := decode(out.Header, out.Data)
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
