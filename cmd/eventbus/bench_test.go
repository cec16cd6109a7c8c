package main

import (
	"regexp"
	"strings"
	"testing"
)

var benchSummary = regexp.MustCompile(`(?s)latency, 20 events one at a time:
  publish confirmed  p50 \d+\.\d\dms  p90 \S+  p99 \S+  max \S+
  delivered          p50 \d+\.\d\dms .*
throughput, 300 events of 64 bytes through the pipelined Publisher:
  published  in \S+ +\d+ events/s
  delivered  in \S+ +\d+ events/s
$`)

// The bench runs on the embedded default when no backend is named, and on
// a server by --url; it prints its summary and a progress line.
func TestBench(t *testing.T) {
	srv := startServer(t)
	for _, c := range []struct {
		name   string
		args   []string
		target string
	}{
		{"embedded", nil, "bench on the embedded default"},
		{"url", []string{"--url", srv.ClientURL()}, "bench on " + srv.ClientURL()},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := execute(t, "", append([]string{"bench", "--messages", "300", "--size", "64", "--round-trips", "20"}, c.args...)...)
			if r.code != exitOK || !strings.HasPrefix(r.stdout, c.target) || !benchSummary.MatchString(r.stdout) ||
				!strings.Contains(r.stderr, "delivered 300 of 300 in ") {
				t.Errorf("exit %d; stdout %q; stderr %q", r.code, r.stdout, r.stderr)
			}
		})
	}
	r := execute(t, "", "bench", "--messages", "0")
	if r.code != exitUsage || r.stderr != "error: --messages 0 out of range; give 1 to 10000000\n" {
		t.Errorf("bench --messages 0: exit %d, stderr %q", r.code, r.stderr)
	}
}
