package testenv

import (
	"fmt"
	"net"
	"net/url"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var quickProbe = probe{dialTimeout: 200 * time.Millisecond, budget: 300 * time.Millisecond, pause: 50 * time.Millisecond}

// recorder stands in for the test's testing.TB to observe Skipf and
// Fatalf; like the real ones they end the calling goroutine.
type recorder struct {
	testing.TB
	skipped string
	failed  string
}

func (r *recorder) Helper() {}

func (r *recorder) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// record runs fn on its own goroutine, as testing does, so that Goexit in
// Skipf or Fatalf ends only fn.
func record(t *testing.T, fn func(tb testing.TB)) *recorder {
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// listen returns the address of a TCP listener that lives until the test ends.
func listen(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestDefaults(t *testing.T) {
	tests := []struct {
		svc  service
		want string
	}{
		{natsService, "nats://127.0.0.1:4222"},
		{databaseService, "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{redisService, "redis://127.0.0.1:6379/0"},
		{amqpService, "amqp://guest:guest@127.0.0.1:5672/"},
		{kafkaService, "127.0.0.1:9092"},
		{awsService, "http://127.0.0.1:4566"},
	}
	for _, tt := range tests {
		t.Run(tt.svc.env, func(t *testing.T) {
			t.Setenv(tt.svc.env, "")
			if got := tt.svc.value(); got != tt.want {
				t.Errorf("value() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEnvOverride(t *testing.T) {
	for _, svc := range []service{natsService, databaseService, redisService, amqpService, kafkaService, awsService} {
		t.Run(svc.env, func(t *testing.T) {
			t.Setenv(svc.env, "  custom-value ")
			if got := svc.value(); got != "custom-value" {
				t.Errorf("value() = %q, want %q", got, "custom-value")
			}
		})
	}
}

// TestAccessorsReturnConfiguredValue points every accessor at a live
// listener and checks that each returns the configured value untouched,
// credentials included.
func TestAccessorsReturnConfiguredValue(t *testing.T) {
	addr := listen(t)
	tests := []struct {
		env   string
		value string
		get   func(testing.TB) any
		want  any
	}{
		{EnvNATS, "nats://user:pw@" + addr, func(tb testing.TB) any { return NATSURL(tb) }, "nats://user:pw@" + addr},
		{EnvDatabase, "postgres://u:pw@" + addr + "/db", func(tb testing.TB) any { return DatabaseURL(tb) }, "postgres://u:pw@" + addr + "/db"},
		{EnvRedis, "redis://:pw@" + addr + "/1", func(tb testing.TB) any { return RedisURL(tb) }, "redis://:pw@" + addr + "/1"},
		{EnvAMQP, "amqp://guest:guest@" + addr + "/", func(tb testing.TB) any { return AMQPURL(tb) }, "amqp://guest:guest@" + addr + "/"},
		{EnvKafka, closedAddr(t) + ", " + addr, func(tb testing.TB) any { return KafkaBrokers(tb) }, nil},
		{EnvAWSEndpoint, "http://" + addr, func(tb testing.TB) any { return AWSEndpoint(tb) }, "http://" + addr},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			t.Setenv(tt.env, tt.value)
			t.Setenv(EnvCI, "1")
			var got any
			r := record(t, func(tb testing.TB) { got = tt.get(tb) })
			if r.failed != "" || r.skipped != "" {
				t.Fatalf("live listener reported unreachable: failed=%q skipped=%q", r.failed, r.skipped)
			}
			want := tt.want
			if tt.env == EnvKafka {
				want = []string{strings.Split(tt.value, ",")[0], addr}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v, want %#v", got, want)
			}
		})
	}
}

func TestUnreachableSkipsOutsideCI(t *testing.T) {
	t.Setenv(EnvCI, "")
	t.Setenv(EnvRedis, "redis://admin:hunter2@"+closedAddr(t)+"/0")
	r := record(t, func(tb testing.TB) {
		redisService.require(tb, quickProbe)
		tb.Errorf("require returned for an unreachable service")
	})
	if r.failed != "" {
		t.Fatalf("Fatalf called outside CI: %q", r.failed)
	}
	checkHint(t, r.skipped, EnvRedis, "scripts/services.sh redis", "hunter2")
}

func TestUnreachableFailsInCI(t *testing.T) {
	t.Setenv(EnvCI, "true")
	t.Setenv(EnvAMQP, "amqp://guest:s3cret@"+closedAddr(t)+"/")
	r := record(t, func(tb testing.TB) {
		amqpService.require(tb, quickProbe)
		tb.Errorf("require returned for an unreachable service")
	})
	if r.skipped != "" {
		t.Fatalf("Skipf called in CI: %q", r.skipped)
	}
	checkHint(t, r.failed, EnvAMQP, "scripts/services.sh rabbitmq", "s3cret")
}

func TestMalformedValueFailsWithoutLeaking(t *testing.T) {
	t.Setenv(EnvCI, "1")
	t.Setenv(EnvDatabase, "host=127.0.0.1 password='open sesame")
	r := record(t, func(tb testing.TB) {
		databaseService.require(tb, quickProbe)
	})
	checkHint(t, r.failed, EnvDatabase, "scripts/services.sh postgres", "sesame")
	if !strings.Contains(r.failed, "unterminated quote") {
		t.Errorf("message %q does not say what is wrong", r.failed)
	}
}

func checkHint(t *testing.T, msg, env, script, secret string) {
	t.Helper()
	if msg == "" {
		t.Fatal("no message reported")
	}
	t.Log(msg)
	for _, want := range []string{env, script} {
		if !strings.Contains(msg, want) {
			t.Errorf("message %q does not mention %q", msg, want)
		}
	}
	if strings.Contains(msg, secret) {
		t.Errorf("message %q leaks the password", msg)
	}
}

func TestUnreachableRemembered(t *testing.T) {
	t.Setenv(EnvCI, "")
	t.Setenv(EnvNATS, "nats://"+closedAddr(t))
	slow := probe{dialTimeout: 200 * time.Millisecond, budget: time.Second, pause: 50 * time.Millisecond}
	first := time.Now()
	if r := record(t, func(tb testing.TB) { natsService.require(tb, slow) }); r.skipped == "" {
		t.Fatal("first call did not skip")
	}
	if elapsed := time.Since(first); elapsed < slow.budget {
		t.Fatalf("first call gave up after %v, before its %v budget", elapsed, slow.budget)
	}
	second := time.Now()
	if r := record(t, func(tb testing.TB) { natsService.require(tb, slow) }); r.skipped == "" {
		t.Fatal("second call did not skip")
	}
	if elapsed := time.Since(second); elapsed >= slow.budget {
		t.Errorf("second call waited %v again; the failure was not remembered", elapsed)
	}
}

func TestWaitsForLateService(t *testing.T) {
	addr := closedAddr(t)
	t.Setenv(EnvCI, "1")
	t.Setenv(EnvAWSEndpoint, "http://"+addr)
	started := make(chan net.Listener, 1)
	go func() {
		time.Sleep(300 * time.Millisecond)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			close(started)
			return
		}
		started <- ln
	}()
	p := probe{dialTimeout: 200 * time.Millisecond, budget: 3 * time.Second, pause: 50 * time.Millisecond}
	r := record(t, func(tb testing.TB) { awsService.require(tb, p) })
	ln, ok := <-started
	if !ok {
		t.Skipf("port %s was taken before the late listener could bind it", addr)
	}
	ln.Close()
	if r.failed != "" {
		t.Fatalf("service that came up within the budget reported unreachable: %s", r.failed)
	}
}

func TestInCI(t *testing.T) {
	t.Setenv(EnvCI, "")
	if InCI() {
		t.Error("InCI() = true with CI empty")
	}
	t.Setenv(EnvCI, "true")
	if !InCI() {
		t.Error("InCI() = false with CI=true")
	}
}

// TestDefaultServices checks the services that scripts/services.sh starts by
// default, through the public accessors: this is what the other packages'
// tests do.
func TestDefaultServices(t *testing.T) {
	t.Run("NATS", func(t *testing.T) {
		t.Setenv(EnvNATS, "")
		if got := NATSURL(t); got != DefaultNATSURL {
			t.Errorf("NATSURL = %q, want %q", got, DefaultNATSURL)
		}
	})
	t.Run("PostgreSQL", func(t *testing.T) {
		t.Setenv(EnvDatabase, "")
		if got := DatabaseURL(t); got != DefaultDatabaseURL {
			t.Errorf("DatabaseURL = %q, want %q", got, DefaultDatabaseURL)
		}
	})
}

func TestEndpoints(t *testing.T) {
	tcp := func(a string) endpoint { return endpoint{network: "tcp", address: a} }
	unix := func(a string) endpoint { return endpoint{network: "unix", address: a} }
	tests := []struct {
		name  string
		parse func(string) ([]endpoint, error)
		in    string
		want  []endpoint
	}{
		{"nats default port", natsService.endpoints, "nats://10.0.0.1", []endpoint{tcp("10.0.0.1:4222")}},
		{"nats list", natsService.endpoints, "nats://a:1, nats://b:2", []endpoint{tcp("a:1"), tcp("b:2")}},
		{"nats no scheme", natsService.endpoints, "a:5", []endpoint{tcp("a:5")}},
		{"nats ipv6", natsService.endpoints, "nats://[::1]:4223", []endpoint{tcp("[::1]:4223")}},
		{"redis default port", redisService.endpoints, "redis://:pw@h/2", []endpoint{tcp("h:6379")}},
		{"redis unix", redisService.endpoints, "unix:///run/redis.sock", []endpoint{unix("/run/redis.sock")}},
		{"amqps port", amqpService.endpoints, "amqps://u:p@h/vh", []endpoint{tcp("h:5671")}},
		{"aws https", awsService.endpoints, "https://sqs.local", []endpoint{tcp("sqs.local:443")}},
		{"kafka list", kafkaEndpoints, "a:1,b", []endpoint{tcp("a:1"), tcp("b:9092")}},
		{"pg url", postgresEndpoints, "postgres://u:p@h:6000/db", []endpoint{tcp("h:6000")}},
		{"pg url default port", postgresEndpoints, "postgresql://h/db", []endpoint{tcp("h:5432")}},
		{"pg multi-host", postgresEndpoints, "postgres://h1:1,h2:2/db", []endpoint{tcp("h1:1"), tcp("h2:2")}},
		{"pg socket query", postgresEndpoints, "postgres:///db?host=/tmp&port=5433", []endpoint{unix("/tmp/.s.PGSQL.5433")}},
		{"pg no host", postgresEndpoints, "postgres:///db", []endpoint{unix("/var/run/postgresql/.s.PGSQL.5432")}},
		{"pg keywords", postgresEndpoints, "host=h port=7 password='a b\\'c' dbname=x", []endpoint{tcp("h:7")}},
		{"pg keywords socket", postgresEndpoints, "host=/run/pg dbname=x", []endpoint{unix("/run/pg/.s.PGSQL.5432")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.parse(tt.in)
			if err != nil {
				t.Fatalf("parse(%q): %v", tt.in, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parse(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestEndpointErrorsHideValue(t *testing.T) {
	tests := []struct {
		name  string
		parse func(string) ([]endpoint, error)
		in    string
	}{
		{"empty", natsService.endpoints, " , "},
		{"bad url", redisService.endpoints, "redis://u:top%zzsecret@h"},
		{"no host", amqpService.endpoints, "amqp://u:topsecret@/vh"},
		{"unknown scheme", natsService.endpoints, "gopher://u:topsecret@h"},
		{"pg bad url", postgresEndpoints, "postgres://u:top%zzsecret@h/db"},
		{"pg keyword only", postgresEndpoints, "topsecret"},
		{"pg open quote", postgresEndpoints, "password='topsecret"},
		{"kafka empty host", kafkaEndpoints, ":9092"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.parse(tt.in)
			if err == nil {
				t.Fatalf("parse(%q) succeeded", tt.in)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q repeats the value", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"postgres://postgres@127.0.0.1:5432/test?sslmode=disable", "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"},
		{"redis://:hunter2@h:6379/0", "redis://:xxxxx@h:6379/0"},
		{"nats://s3cr3ttoken@h:4222", "nats://xxxxx@h:4222"},
		{"nats://u:p1@a:4222,nats://u:p2@b:4222", "nats://u:xxxxx@a:4222,nats://u:xxxxx@b:4222"},
		{"nats://u:pa,ss@a:4222", "nats://u:xxxxx@a:4222"},
		{"postgres://u:pw@h1:1,h2:2/db", "postgres://u:xxxxx@h1:1,h2:2/db"},
		{"postgres://h/db?sslmode=require&password=pw", "postgres://h/db?password=xxxxx&sslmode=require"},
		{"https://sqs.local/?X-Amz-Security-Token=tok", "https://sqs.local/?X-Amz-Security-Token=xxxxx"},
		{"postgres://u:pa/ss@h/db", "postgres://xxxxx"},
		{"postgres://u:pa#ss@h/db", "postgres://xxxxx"},
		{"redis://u:top%zzsecret@h", "redis://xxxxx"},
		{"host=h user=u password=pw dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password='p w\\'x' sslpassword=k", "host=h password=xxxxx sslpassword=xxxxx"},
		{"user:pw@h:4222", "xxxxx@h:4222"},
		{"127.0.0.1:9092,127.0.0.1:9093", "127.0.0.1:9092,127.0.0.1:9093"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := Redact(tt.in); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzRedact checks that no password, whatever its characters, survives
// Redact in either connection string form.
func FuzzRedact(f *testing.F) {
	f.Add("guest2")
	f.Add("p@ss/w#rd?x")
	f.Add("@00#")
	f.Add("it's a \\ secret")
	f.Fuzz(func(t *testing.T, password string) {
		if len(password) < 4 {
			t.Skip()
		}
		quoted := strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(password)
		for _, in := range []string{
			"postgres://user:" + password + "@127.0.0.1:5432/db",
			"postgres://user:" + url.QueryEscape(password) + "@127.0.0.1:5432/db",
			"host=h password='" + quoted + "' dbname=d",
		} {
			out := Redact(in)
			rest := strings.Replace(in, password, "", 1) + " " + redacted
			if strings.Contains(out, password) && !strings.Contains(rest, password) {
				t.Errorf("Redact(%q) = %q leaks the password", in, out)
			}
		}
	})
}
