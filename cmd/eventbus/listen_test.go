package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/marty-msf/eventbus"
)

// A group resumes where it stopped, and a message received after --count is
// given back to the group rather than acknowledged unprinted.
func TestListenGroupResumesAndGivesBackExtra(t *testing.T) {
	srv := startServer(t)
	url := srv.ClientURL()
	var ids []string
	for i := range 3 {
		r := execute(t, "", "publish", "stock.moved", fmt.Sprintf(`{"n":%d}`, i), "--url", url)
		if r.code != 0 {
			t.Fatalf("publish: exit %d, stderr %q", r.code, r.stderr)
		}
		ids = append(ids, strings.TrimSpace(r.stdout))
	}

	first := execute(t, "", "listen", "stock.moved", "--url", url, "--group", "audit", "--from-start", "--count", "2")
	if first.code != 0 {
		t.Fatalf("listen: exit %d, stderr %q", first.code, first.stderr)
	}
	got := lines(t, first.stdout)
	if len(got) != 2 || got[0]["id"] != ids[0] || got[1]["id"] != ids[1] {
		t.Fatalf("first listen printed %q, want messages %v in order", first.stdout, ids[:2])
	}

	second := execute(t, "", "listen", "stock.moved", "--url", url, "--group", "audit", "--count", "1")
	got = lines(t, second.stdout)
	if second.code != 0 || len(got) != 1 || got[0]["id"] != ids[2] || got[0]["data"].(map[string]any)["n"] != 2.0 {
		t.Fatalf("second listen: exit %d, printed %q, want only %s", second.code, second.stdout, ids[2])
	}
}

// An interrupt ends listen with status 0, having printed nothing when
// nothing came.
func TestListenInterrupted(t *testing.T) {
	srv := startServer(t)
	l := start(t, "listen", "a.b", "c", "--url", srv.ClientURL())
	l.stderr.waitFor(t, "listening to events of type a.b, c on "+srv.ClientURL())
	time.Sleep(50 * time.Millisecond)
	if code := l.interrupt(t); code != 0 {
		t.Fatalf("exit %d, stderr %q", code, l.stderr.String())
	}
	if out := l.stdout.String(); out != "" {
		t.Fatalf("printed %q, want nothing", out)
	}
}

func TestEnvelopeData(t *testing.T) {
	for _, tc := range []struct {
		contentType string
		data        string
		want        string
	}{
		{"application/json", `{"a":1}`, `"data":{"a":1}`},
		{"application/cloudevents+json; charset=utf-8", `[true]`, `"data":[true]`},
		{"", `3`, `"data":3`},
		{"text/plain", `hello`, `"data":"hello"`},
		{"application/json", `not json`, `"data":"not json"`},
		{"application/octet-stream", "\xff\x00", `"data_base64":"/wA="`},
	} {
		m := &eventbus.Message{ID: "1", Source: "s", Type: "t", DataContentType: tc.contentType, Data: []byte(tc.data)}
		b, err := envelope(m)
		if err != nil {
			t.Fatal(err)
		}
		line := string(b)
		if !json.Valid(b) || !strings.HasPrefix(line, `{"specversion":"1.0","id":"1","source":"s","type":"t",`) {
			t.Errorf("envelope %s is not JSON with the attributes first, in order", line)
		}
		if !strings.Contains(line, tc.want) {
			t.Errorf("%q %q: %s, want %s", tc.contentType, tc.data, line, tc.want)
		}
	}
}

// With the services' prefixes, listen and publish meet on the prefixed
// subjects and streams, apart from an unprefixed bus on the same server.
func TestPrefixes(t *testing.T) {
	srv := startServer(t)
	url := srv.ClientURL()
	prefixes := []string{"--url", url, "--subject-prefix", "tenant1", "--stream-prefix", "T1"}
	plain := start(t, "listen", "order.created", "--url", url)
	tenant := start(t, append([]string{"listen", "order.created", "--count", "1"}, prefixes...)...)
	plain.stderr.waitFor(t, "listening")
	tenant.stderr.waitFor(t, "listening")
	pub := execute(t, "", append([]string{"publish", "order.created", `{"t":1}`}, prefixes...)...)
	if pub.code != 0 {
		t.Fatalf("publish: exit %d, stderr %q", pub.code, pub.stderr)
	}
	if code := tenant.wait(t); code != 0 {
		t.Fatalf("listen: exit %d", code)
	}
	if got := lines(t, tenant.stdout.String()); len(got) != 1 || got[0]["id"] != strings.TrimSpace(pub.stdout) {
		t.Fatalf("prefixed listen printed %q, want %s", tenant.stdout.String(), pub.stdout)
	}
	time.Sleep(100 * time.Millisecond)
	if code := plain.interrupt(t); code != 0 || plain.stdout.String() != "" {
		t.Fatalf("unprefixed listen: exit %d, printed %q; want nothing", code, plain.stdout.String())
	}
}
