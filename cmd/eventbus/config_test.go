package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "eventbus.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigFileSelectsTheBackends(t *testing.T) {
	srv := startServer(t)
	path := writeConfig(t, "backends:\n  nats:\n    url: ${SERVER}\n")
	l := start(t, "listen", "order.created", "--url", srv.ClientURL(), "--count", "1")
	l.stderr.waitFor(t, "listening")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	env := map[string]string{"EVENTBUS_CONFIG": path, "SERVER": srv.ClientURL()}
	var out, errOut bytes.Buffer
	code := run(ctx, []string{"publish", "order.created", `{"id":1}`}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
	if code != 0 {
		t.Fatalf("publish with EVENTBUS_CONFIG: exit %d, %s", code, errOut.String())
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d, %s", code, l.stderr.String())
	}
	if !strings.Contains(l.stdout.String(), strings.TrimSpace(out.String())) {
		t.Errorf("listen printed %q, want the id %q", l.stdout.String(), out.String())
	}
}

func TestConfigFileWithoutBackendsRunsEmbedded(t *testing.T) {
	path := writeConfig(t, "data_dir: "+filepath.ToSlash(t.TempDir())+"\n")
	res := execute(t, "", "publish", "note.added", `"hi"`, "--config", path)
	if res.code != 0 || strings.TrimSpace(res.stdout) == "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", res.code, res.stdout, res.stderr)
	}
}

func TestConfigFileProblemsAreUsageErrors(t *testing.T) {
	path := writeConfig(t, "backends:\n  nats:\n    url: nats://u:Sentinel-cli-77@h:4222?bogus=1\n")
	res := execute(t, "", "publish", "x", "1", "--config", path)
	if res.code != exitUsage || !strings.Contains(res.stderr, path+":3:10: backends.nats.url") ||
		!strings.Contains(res.stderr, `parameter "bogus"`) || strings.Contains(res.stderr, "Sentinel-cli-77") {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = execute(t, "", "publish", "x", "1", "--config", path, "--url", "nats://h:4222")
	if res.code != exitUsage || !strings.Contains(res.stderr, "exclude each other") {
		t.Fatalf("--config with --url: exit %d, stderr %q", res.code, res.stderr)
	}
}
