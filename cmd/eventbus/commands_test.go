package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// --lines publishes one message per line, in the listener's hands in full,
// prints the ids in the input's order and reports the count.
func TestPublishJSONLines(t *testing.T) {
	url := startServer(t).ClientURL()
	l := start(t, "listen", "page.viewed", "--url", url, "--count", "50", "--format", "json")
	l.stderr.waitFor(t, "listening")
	var in strings.Builder
	for i := range 50 {
		in.WriteString(`{"n":` + strconv.Itoa(i) + "}\n\n")
	}
	p := execute(t, in.String(), "publish", "page.viewed", "--lines", "--url", url)
	ids := strings.Fields(p.stdout)
	if p.code != 0 || len(ids) != 50 || !strings.Contains(p.stderr, "published 50 of 50") {
		t.Fatalf("exit %d, %d ids, stderr %q", p.code, len(ids), p.stderr)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("listen: exit %d, %s", code, l.stderr.String())
	}
	seen := map[float64]string{}
	for _, m := range lines(t, l.stdout.String()) {
		seen[m["data"].(map[string]any)["n"].(float64)] = m["id"].(string)
	}
	for i, id := range ids {
		if seen[float64(i)] != id {
			t.Fatalf("line %d: listen saw id %q, publish printed %q", i, seen[float64(i)], id)
		}
	}
}

// A bad line fails the whole input before anything is sent.
func TestPublishJSONLinesChecksEveryLineFirst(t *testing.T) {
	url := startServer(t).ClientURL()
	path := filepath.Join(t.TempDir(), "in.jsonl")
	if err := os.WriteFile(path, []byte("{\"a\":1}\n{\"a\":\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := execute(t, "", "publish", "x.y", "--lines", "--file", path, "--url", url)
	if r.code != exitUsage || !strings.Contains(r.stderr, "line 2 is not valid JSON") || r.stdout != "" {
		t.Fatalf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestPublishFromFile(t *testing.T) {
	url := startServer(t).ClientURL()
	path := filepath.Join(t.TempDir(), "order.json")
	if err := os.WriteFile(path, []byte(`{"order_id":"o-9"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	l := start(t, "tail", "order.placed", "--url", url, "--count", "1", "--format", "text")
	l.stderr.waitFor(t, "listening")
	p := execute(t, "", "publish", "order.placed", "--file", path, "--url", url, "--key", "o-9")
	if p.code != 0 {
		t.Fatalf("publish: exit %d, %s", p.code, p.stderr)
	}
	if code := l.wait(t); code != 0 {
		t.Fatalf("tail: exit %d, %s", code, l.stderr.String())
	}
	out := l.stdout.String()
	for _, want := range []string{" order.placed id=" + strings.TrimSpace(p.stdout), "source=eventbus-cli", "key=o-9", `{"order_id":"o-9"}`} {
		if !strings.Contains(out, want) {
			t.Errorf("text line %q lacks %q", out, want)
		}
	}
}

// respond answers request (query's alias) with a fixed reply or a shell
// command's output, and a failing command is a remote error with its code.
func TestRespondAnswersRequests(t *testing.T) {
	url := startServer(t).ClientURL()
	fixed := start(t, "respond", "inventory", "stock.get", "--reply", `{"available":7}`, "--url", url, "--count", "1")
	fixed.stderr.waitFor(t, "answering inventory.stock.get")
	q := execute(t, "", "request", "inventory", "stock.get", `{"sku":"s-1"}`, "--url", url)
	if q.code != 0 || strings.TrimSpace(q.stdout) != `{"available":7}` {
		t.Fatalf("request: exit %d, stdout %q, stderr %q", q.code, q.stdout, q.stderr)
	}
	if code := fixed.wait(t); code != 0 || !strings.Contains(fixed.stderr.String(), `answered {"available":7}`) {
		t.Fatalf("respond: exit %d, stderr %q", code, fixed.stderr.String())
	}

	script := `read -r body; case "$body" in *fail*) echo "no such sku" >&2; exit 3;; esac; printf '{"type":"%s","echo":%s}' "$EVENTBUS_TYPE" "$body"`
	sh := start(t, "respond", "echo", "say.it", "--exec", script, "--url", url, "--count", "2")
	sh.stderr.waitFor(t, "answering echo.say.it")
	q = execute(t, "", "query", "echo", "say.it", `{"hi":1}`, "--url", url)
	if q.code != 0 || strings.TrimSpace(q.stdout) != `{"type":"say.it","echo":{"hi":1}}` {
		t.Fatalf("query: exit %d, stdout %q, stderr %q", q.code, q.stdout, q.stderr)
	}
	q = execute(t, "", "query", "echo", "say.it", `"fail"`, "--url", url)
	if q.code != exitRemote || !strings.Contains(q.stderr, "[exit_3] no such sku") {
		t.Fatalf("failing query: exit %d, stderr %q", q.code, q.stderr)
	}
	if code := sh.wait(t); code != 0 {
		t.Fatalf("respond --exec: exit %d, stderr %q", code, sh.stderr.String())
	}
}

func TestRespondUsage(t *testing.T) {
	for _, args := range [][]string{
		{"respond", "a", "b"},
		{"respond", "a", "b", "--reply", "1", "--exec", "true"},
		{"respond", "a", "b", "--reply", "{"},
	} {
		if r := execute(t, "", args...); r.code != exitUsage {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestVersion(t *testing.T) {
	r := execute(t, "", "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "eventbus ") || !strings.Contains(r.stdout, " go1.") {
		t.Fatalf("exit %d, stdout %q", r.code, r.stdout)
	}
}
