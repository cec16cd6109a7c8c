package rabbitbus_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/rabbitbus"
)

// A Config printed in every way, or logged, shows no credentials.
func TestConfigPrintsNoCredentials(t *testing.T) {
	const secret = "S3NTINEL-config"
	for _, u := range []string{"amqp://svc:" + secret + "@127.0.0.1:5672/vh", "amqps://svc:" + secret + "/x@127.0.0.1:5671/"} {
		c := rabbitbus.Config{URL: u}
		var logged bytes.Buffer
		slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "config", c, "pointer", &c)
		slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "config", c)
		for _, out := range []string{fmt.Sprint(c), fmt.Sprintf("%v", &c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), c.String(), logged.String()} {
			if strings.Contains(out, secret) {
				t.Errorf("shows the secret: %s", out)
			}
			if !strings.Contains(out, "127.0.0.1") {
				t.Errorf("shows too little: %s", out)
			}
		}
	}
}
