package awsbus

import (
	"testing"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// FuzzDecode: any SQS body and message attributes, in either content mode,
// decode without panic into a message and an error matching ErrMalformed,
// or into a valid envelope that encodes and decodes again unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		w, err := encode(m)
		if err != nil {
			f.Fatal(err)
		}
		h := map[string][]string{}
		for _, a := range w.attrs {
			h[a.name] = []string{a.value}
		}
		f.Add(w.body, drivertest.FuzzHeaderText(h))
	}
	f.Fuzz(func(t *testing.T, body, attributes string) {
		attrs := map[string]string{}
		for _, kv := range drivertest.FuzzHeaders(attributes) {
			attrs[kv[0]] = kv[1]
		}
		m, err := decode(body, attrs)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		w, err := encode(m)
		if err != nil {
			t.Skipf("encode refuses what decode accepted: %v", err)
		}
		again, err := decode(w.body, wireAttrs(w))
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
