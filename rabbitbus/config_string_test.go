package rabbitbus_test

import (
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/rabbitbus"
)

// A Config printed in every way, or logged, shows no credentials.
func TestConfigPrintsNoCredentials(t *testing.T) {
	const secret = "S3NTINEL-config"
	for _, u := range []string{"amqp://svc:" + secret + "@127.0.0.1:5672/vh", "amqps://svc:" + secret + "/x@127.0.0.1:5671/"} {
		c := rabbitbus.Config{URL: u}
		for _, out := range append(testenv.Printed(c), c.String()) {
			if strings.Contains(out, secret) {
				t.Errorf("shows the secret: %s", out)
			}
			if !strings.Contains(out, "127.0.0.1") {
				t.Errorf("shows too little: %s", out)
			}
		}
	}
}
