package natsbus_test

import (
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/internal/testenv"
	"github.com/marty-msf/eventbus/natsbus"
)

// A Config printed in every way, or logged, shows no credentials.
func TestConfigPrintsNoCredentials(t *testing.T) {
	const secret = "S3NTINEL-config"
	c := natsbus.Config{
		Servers:  []string{"nats://svc:" + secret + "@127.0.0.1:4222", "nats://svc:" + secret + "/x@127.0.0.1:4223"},
		User:     "svc",
		Password: secret,
		Token:    secret,
	}
	for _, out := range append(testenv.Printed(c), c.String()) {
		if strings.Contains(out, secret) {
			t.Errorf("shows the secret: %s", out)
		}
		if !strings.Contains(out, "svc") {
			t.Errorf("shows too little: %s", out)
		}
	}
}
