package driver_test

import (
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
)

// FuzzDecodeStructured: any body decodes without panic into a message and
// an error matching ErrMalformed, or into a valid envelope that encodes and
// decodes again unchanged.
func FuzzDecodeStructured(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		f.Add(driver.EncodeStructured(m))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		m, err := driver.DecodeStructured(body)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		again, err := driver.DecodeStructured(driver.EncodeStructured(m))
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
