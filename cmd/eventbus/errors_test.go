package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestBadInput(t *testing.T) {
	url := startServer(t).ClientURL()
	for _, tc := range []struct {
		name  string
		args  []string
		stdin string
		have  string
	}{
		{"invalid JSON", []string{"publish", "order.created", `{"id":`}, "", "payload is not valid JSON"},
		{"invalid JSON on stdin", []string{"publish", "order.created"}, "{nope}", "payload is not valid JSON"},
		{"no payload", []string{"publish", "order.created"}, " \n", "no payload"},
		{"bad event type", []string{"publish", "order..created", `{}`}, "", "invalid name"},
		{"wildcard type", []string{"publish", "order.*", `{}`}, "", "invalid name"},
		{"bad command service", []string{"publish", "x", `{}`, "--command", "bil.ling"}, "", "invalid name"},
		{"bad stream", []string{"publish", "x", `{}`, "--stream", "a b"}, "", "invalid name"},
		{"two kinds", []string{"publish", "x", `{}`, "--broadcast", "--command", "billing"}, "", "none of the others can be"},
		{"too many arguments", []string{"publish", "x", `{}`, `{}`}, "", "expected TYPE [JSON|-]"},
		{"no type", []string{"publish"}, "", "expected TYPE"},
		{"bad listen type", []string{"listen", "a.>"}, "", "invalid name"},
		{"bad group", []string{"listen", "a", "--group", "g.1"}, "", "invalid name"},
		{"negative count", []string{"listen", "a", "--count", "-1"}, "", "--count"},
		{"group on broadcast", []string{"listen", "a", "--broadcast", "--group", "g"}, "", "--group does not apply"},
		{"from-start without group", []string{"listen", "a", "--from-start"}, "", "needs --group"},
		{"listen nothing", []string{"listen"}, "", "at least one TYPE"},
		{"bad query service", []string{"query", "in.ventory", "stock.get", `1`}, "", "invalid name"},
		{"query bad JSON", []string{"query", "inventory", "stock.get", `'x'`}, "", "not valid JSON"},
		{"bad timeout", []string{"query", "inventory", "stock.get", `1`, "--timeout", "0s"}, "", "--timeout"},
		{"unknown flag", []string{"publish", "x", `{}`, "--nope"}, "", "unknown flag"},
		{"unknown command", []string{"subscribe"}, "", "unknown command"},
		{"server argument", []string{"server", "extra"}, "", "unexpected argument"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args[0] != "server" && len(args) > 1 {
				args = append(args, "--url", url)
			}
			r := execute(t, tc.stdin, args...)
			// One error line, which says what to do next.
			if r.code != exitUsage || !strings.Contains(r.stderr, tc.have) || r.stdout != "" ||
				!strings.HasPrefix(r.stderr, "error: ") || strings.Count(r.stderr, "\n") != 1 ||
				!strings.Contains(r.stderr, "; ") || strings.Count(r.stderr, "eventbus: ") > 1 {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d and %q", r.code, r.stdout, r.stderr, exitUsage, tc.have)
			}
		})
	}
}

// An unreachable server fails after --connect-timeout, and no secret appears in the output,
// whether it came in the URL, a flag or the environment.
func TestUnreachableServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, tc := range []struct {
		env  map[string]string
		args []string
	}{
		{map[string]string{"NATS_URL": "nats://alice:url-s3cret@" + addr}, []string{"publish", "order.created", `{}`}},
		{map[string]string{"NATS_URL": "nats://" + addr, "NATS_TOKEN": "env-t0ken"}, []string{"publish", "order.created", `{}`}},
		{nil, []string{"publish", "order.created", `{}`, "--url", "nats://flag-t0ken@" + addr}},
		{nil, []string{"listen", "order.created", "--url", addr, "--user", "bob", "--password", "flag-s3cret"}},
		{map[string]string{"NATS_PASSWORD": "env-s3cret", "NATS_USER": "dave"}, []string{"query", "inventory", "stock.get", `1`, "--url", "nats://127.0.0.1:1,nats://carol:other-s3cret@" + addr}},
	} {
		args := append(tc.args, "--connect-timeout", "500ms")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		var out, errOut bytes.Buffer
		began := time.Now()
		code := run(ctx, args, func(k string) string { return tc.env[k] }, strings.NewReader(""), &out, &errOut)
		took := time.Since(began)
		cancel()
		if code != exitUnavailable || !strings.Contains(errOut.String(), "cannot connect to") {
			t.Errorf("%v: exit %d, stderr %q; want exit %d, cannot connect", args, code, errOut.String(), exitUnavailable)
		}
		if took > 5*time.Second {
			t.Errorf("%v: took %v to fail", args, took)
		}
		for _, secret := range []string{"s3cret", "t0ken"} {
			if strings.Contains(errOut.String()+out.String(), secret) {
				t.Errorf("%v: output shows a secret: %q", args, errOut.String())
			}
		}
	}
}

// The tool shows a server URL only as driver.RedactURL gives it: without
// user information, however the password broke the URL.
func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://127.0.0.1:4222":            "nats://127.0.0.1:4222",
		"nats://alice:pw@h:4222":           "nats://REDACTED@h:4222",
		"tls://tok@h:4222":                 "tls://REDACTED@h:4222",
		"nats://a:p w%zz@h:1":              "REDACTED@h:1",
		"nats://svc:123/pw@h:4222":         "nats://REDACTED@h:4222",
		"h:4222":                           "nats://h:4222",
		"wss://u:p@example.com/path?x=1#f": "wss://REDACTED@example.com/path?x=1#f",
	} {
		cf := &connFlags{}
		cf.url = in
		if got := cf.servers(); got != want {
			t.Errorf("servers() of %q = %q, want %q", in, got, want)
		}
	}
}

// A server that accepts connections but never answers is given up on after
// --connect-timeout.
func TestSilentServerTimesOut(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	defer func() {
		ln.Close()
		for c := range accepted {
			c.Close()
		}
	}()
	began := time.Now()
	r := execute(t, "", "publish", "order.created", `{}`, "--url", ln.Addr().String(), "--connect-timeout", "300ms")
	if took := time.Since(began); r.code != exitUnavailable || !strings.Contains(r.stderr, "cannot connect to nats://"+ln.Addr().String()) || took > 3*time.Second {
		t.Fatalf("exit %d after %v, stderr %q; want exit %d within the connect timeout", r.code, took, r.stderr, exitUnavailable)
	}
}

// Defaults taken from the environment never show in help.
func TestHelpShowsNoSecret(t *testing.T) {
	var out, errOut bytes.Buffer
	env := map[string]string{"NATS_URL": "nats://u:url-s3cret@h:1", "NATS_PASSWORD": "env-s3cret", "NATS_TOKEN": "env-s3cret"}
	code := run(context.Background(), []string{"publish", "--help"}, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "--password") || strings.Contains(out.String()+errOut.String(), "s3cret") {
		t.Fatalf("exit %d, help %q", code, out.String())
	}
}

// packagePrefixes finds the project's package prefixes in a message.
var packagePrefixes = regexp.MustCompile(`\b(eventbus|membus|natsbus|kafkabus|rabbitbus|redisbus|awsbus|config|saga|sqlstore|outbox|driver): `)

// The built tool prints each failure as one line, "error: " and what
// failed, each package's prefix once, then after "; " what to do next.
func TestBinaryErrorsSayEachPartOnce(t *testing.T) {
	url := startServer(t).ClientURL()
	dir := t.TempDir()
	big := filepath.Join(dir, "big.json")
	if err := os.WriteFile(big, []byte(`"`+strings.Repeat("x", 2<<20)+`"`), 0o600); err != nil {
		t.Fatal(err)
	}
	badConfig := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badConfig, []byte("backends:\n  main:\n    url: "+url+"\nroutes:\n  - pattern: event\n    backend: nope\n  - pattern: stream\n    backend: gone\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines := filepath.Join(dir, "lines.json")
	if err := os.WriteFile(lines, []byte("{}\n{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	down := "nats://127.0.0.1:" + strconv.Itoa(freePort(t))
	for _, c := range []struct {
		name string
		args []string
		code int
		have []string // what failed, then what to do next
	}{
		{"invalid event type", []string{"publish", "order..created", `{}`, "--url", url}, exitUsage,
			[]string{`eventbus: publish event: message type "order..created": invalid name`, `; see "eventbus publish --help"`}},
		{"oversize payload", []string{"publish", "order.created", "--file", big, "--url", url}, exitFailure,
			[]string{"eventbus: publish events.order.created via nats: natsbus: publish to", "message too large", "; send a smaller payload"}},
		{"invalid service, pipelined", []string{"publish", "charge", "--lines", "--file", lines, "--command", "bil.ling", "--url", url}, exitUsage,
			[]string{`2 of 2 messages not published, the first on line 1: eventbus: send command: service "bil.ling": invalid name`, `; see "eventbus publish --help"`}},
		{"invalid group", []string{"listen", "order.created", "--group", "g.1", "--url", url}, exitUsage,
			[]string{`eventbus: subscribe events: group "g.1": invalid name`, `; see "eventbus listen --help"`}},
		{"no responders", []string{"query", "inventory", "stock.get", `1`, "--timeout", "1s", "--url", url}, exitNoResponders,
			[]string{"no responders: nobody handled inventory.stock.get", "eventbus: query queries.inventory.stock.get via nats: natsbus: request to", "; start a service that does"}},
		{"configuration with unknown backends", []string{"publish", "order.created", `{}`, "--config", badConfig}, exitUsage,
			[]string{"config: 2 problems: ", `routes[0].backend: unknown backend "nope"`, `; ` + badConfig, `routes[1].backend: unknown backend "gone"`, `; see "eventbus publish --help"`}},
		{"unknown dead letter", []string{"dlq", "show", "nope", "--url", url}, exitFailure,
			[]string{`eventbus: dead letter "nope": dead letter not found`, "; list them with eventbus dlq list"}},
		{"server down", []string{"publish", "order.created", `{}`, "--url", down, "--connect-timeout", "300ms"}, exitUnavailable,
			[]string{"cannot connect to " + down, "natsbus: ", `; is the server running? start one with "eventbus server"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runBinary(t, c.args...)
			// Notices such as "waiting for ..." may come before the error.
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			last := lines[len(lines)-1]
			if r.code != c.code || !strings.HasSuffix(r.stderr, "\n") || !strings.HasPrefix(last, "error: ") || strings.Count(r.stderr, "error: ") != 1 {
				t.Fatalf("exit %d (want %d), stderr %q: want one error line, last", r.code, c.code, r.stderr)
			}
			for _, part := range c.have {
				if !strings.Contains(last, part) {
					t.Errorf("%q does not say %q", last, part)
				}
			}
			if !strings.Contains(last, "; ") || strings.Index(last, c.have[len(c.have)-1]) < strings.Index(last, c.have[0]) {
				t.Errorf("%q does not say what to do next after what failed", last)
			}
			seen := map[string]int{}
			for _, m := range packagePrefixes.FindAllStringSubmatch(last, -1) {
				if seen[m[1]]++; seen[m[1]] == 2 {
					t.Errorf("%q says %q more than once", last, m[0])
				}
			}
		})
	}
}

// The exit status tells a mistake in the command line (2) from a server or
// store that cannot be reached (6) and from other failures (1); the error is
// one line that says what to do next.
func TestExitStatusByCause(t *testing.T) {
	port := freePort(t)
	down := "nats://127.0.0.1:" + strconv.Itoa(port)
	for _, c := range []struct {
		args []string
		code int
		next string
	}{
		{[]string{"dlq", "list", "--nope"}, exitUsage, `see "eventbus dlq list --help"`},
		{[]string{"saga", "bogus"}, exitUsage, "--help"},
		{[]string{"dlq", "list", "--url", down, "--connect-timeout", "500ms"}, exitUnavailable, `start one with "eventbus server"`},
		{[]string{"bench", "--url", down, "--connect-timeout", "500ms"}, exitUnavailable, "wait longer with --connect-timeout"},
		{[]string{"saga", "list", "--store", "postgres://127.0.0.1:" + strconv.Itoa(port) + "/db?connect_timeout=2"}, exitUnavailable, "check that the database runs"},
		{[]string{"demo", "--data", "/proc/eventbus-demo"}, exitFailure, "give --data a directory you can write"},
	} {
		r := execute(t, "", c.args...)
		// Notices such as "waiting for ..." may come first.
		if r.code != c.code || strings.Count(r.stderr, "\nerror: ")+strings.Count("\n"+r.stderr[:min(len(r.stderr), 7)], "\nerror: ") != 1 ||
			!strings.Contains(r.stderr, c.next) {
			t.Errorf("%v: exit %d (want %d), stderr %q (want %q)", c.args, r.code, c.code, r.stderr, c.next)
		}
	}
}
