package driver_test

import (
	"context"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

type fakeOpener struct{ got *url.URL }

func (f *fakeOpener) OpenURL(_ context.Context, u *url.URL, _ *driver.OpenOptions) (driver.Driver, error) {
	f.got = u
	p := driver.NewParams(u)
	var n int
	p.Int("n", &n)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("fake cannot connect to " + u.String())
}

// fakeScheme is registered once per test binary: the registry refuses a
// second registration, and -count runs a test again in the same binary.
var (
	fakeOnce   sync.Once
	fakeScheme = &fakeOpener{}
)

func TestRegistryOpensByScheme(t *testing.T) {
	fakeOnce.Do(func() { driver.RegisterScheme("Fake-Test", fakeScheme) })
	f := fakeScheme
	f.got = nil
	if !contains(driver.Schemes(), "fake-test") {
		t.Fatalf("Schemes() = %v, want fake-test in it", driver.Schemes())
	}
	_, err := driver.OpenURL(context.Background(), "FAKE-TEST://user:sentinel-pw-1@host?n=3", nil)
	if f.got == nil || f.got.Scheme != "fake-test" || f.got.Host != "host" {
		t.Fatalf("opener got %v", f.got)
	}
	if err == nil || strings.Contains(err.Error(), "sentinel-pw-1") {
		t.Fatalf("error %v: want one without the password", err)
	}
	_, err = driver.OpenURL(context.Background(), "fake-test://host?n=x&m=1", nil)
	var ue *driver.URLError
	if !errors.As(err, &ue) || ue.Param != "n" || !errors.Is(err, driver.ErrUnknownParam) {
		t.Fatalf("bad and unknown parameters: %v", err)
	}
	for _, want := range []string{`parameter "n"`, `parameter "m": unknown parameter`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	// A misspelt secret parameter is unknown, and its value hidden.
	_, err = driver.OpenURL(context.Background(), "fake-test://host?n=3&pasword=sentinel-pw-3", nil)
	if !errors.Is(err, driver.ErrUnknownParam) || strings.Contains(err.Error(), "sentinel-pw-3") {
		t.Errorf("unknown parameter: %v, want its value hidden", err)
	}
}

var dupOnce sync.Once

func TestRegisterSchemeRefusesProgrammingErrors(t *testing.T) {
	dupOnce.Do(func() { driver.RegisterScheme("dup-test", &fakeOpener{}) })
	for name, f := range map[string]func(){
		"twice":      func() { driver.RegisterScheme("DUP-test", &fakeOpener{}) },
		"bad scheme": func() { driver.RegisterScheme("1x", &fakeOpener{}) },
		"nil":        func() { driver.RegisterScheme("nil-test", nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}

func TestUnknownSchemeNamesThePackage(t *testing.T) {
	for scheme, pkg := range map[string]string{
		"kafka": "kafkabus", "amqp": "rabbitbus", "amqps": "rabbitbus", "redis": "redisbus",
		"rediss": "redisbus", "aws": "awsbus", "sns+sqs": "awsbus",
	} {
		_, err := driver.OpenURL(context.Background(), scheme+"://u:sentinel-pw-2@h:1", nil)
		var se *driver.UnknownSchemeError
		if !errors.As(err, &se) || !errors.Is(err, driver.ErrUnknownScheme) || !strings.HasSuffix(se.Package, "/"+pkg) {
			t.Errorf("%s: %v, want an UnknownSchemeError naming %s", scheme, err, pkg)
			continue
		}
		if !strings.Contains(err.Error(), "import github.com/marty-msf/eventbus/"+pkg) || strings.Contains(err.Error(), "sentinel-pw-2") {
			t.Errorf("%s: %q", scheme, err)
		}
	}
	if _, err := driver.OpenURL(context.Background(), "nowhere://x", nil); !errors.Is(err, driver.ErrUnknownScheme) {
		t.Errorf("nowhere: %v", err)
	}
	if _, err := driver.OpenURL(context.Background(), "no-scheme", nil); err == nil || !strings.Contains(err.Error(), "no scheme") {
		t.Errorf("no scheme: %v", err)
	}
	if err := driver.CheckURL("%zz://x"); err == nil {
		t.Error("malformed URL passed CheckURL")
	}
}

func TestParamsConvertEveryType(t *testing.T) {
	u, _ := url.Parse("x://h?s=a&l=b,c&l=d&b&b2=false&i=-3&i32=7&i64=9000000000&d=1m30s&bp=true")
	p := driver.NewParams(u)
	var (
		s       string
		l       []string
		b, b2   = false, true
		i       int
		i32     int32
		i64     int64
		d       time.Duration
		bp, bp2 *bool
	)
	p.String("s", &s)
	p.Strings("l", &l)
	p.Bool("b", &b)
	p.Bool("b2", &b2)
	p.Int("i", &i)
	p.Int32("i32", &i32)
	p.Int64("i64", &i64)
	p.Duration("d", &d)
	p.BoolPtr("bp", &bp)
	p.BoolPtr("absent", &bp2)
	if err := p.Err(); err != nil {
		t.Fatal(err)
	}
	if s != "a" || strings.Join(l, "|") != "b|c|d" || !b || b2 || i != -3 || i32 != 7 || i64 != 9000000000 ||
		d != 90*time.Second || bp == nil || !*bp || bp2 != nil {
		t.Fatalf("got %q %q %v %v %d %d %d %v %v %v", s, l, b, b2, i, i32, i64, d, bp, bp2)
	}

	u, _ = url.Parse("x://h?b=maybe&i=1.5&i32=9999999999&d=soon&s=1&s=2")
	p = driver.NewParams(u)
	p.Bool("b", &b)
	p.Int("i", &i)
	p.Int32("i32", &i32)
	p.Duration("d", &d)
	p.String("s", &s)
	err := p.Err()
	for _, param := range []string{"b", "i", "i32", "d", "s"} {
		if !hasParamError(err, param) {
			t.Errorf("no error for %s in %v", param, err)
		}
	}
}

func hasParamError(err error, param string) bool {
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var ue *driver.URLError
		if errors.As(e, &ue) && ue.Param == param {
			return true
		}
	}
	return false
}

func TestRedaction(t *testing.T) {
	for raw, want := range map[string]string{
		"nats://alice:s3cr%40t@h:4222":            "nats://REDACTED@h:4222",
		"nats://tok3n@h":                          "nats://REDACTED@h",
		"redis://h?password=pw&db=1":              "redis://h?db=1&password=REDACTED",
		"kafka://h?sasl_secret=x&tls_key_file=/k": "kafka://h?sasl_secret=REDACTED&tls_key_file=%2Fk",
		"::bad@host":                              "REDACTED@host",
		// A password with an unescaped '/', '?' or '#' would show in the
		// path, a parameter name or the fragment.
		"nats://svc:123/pw@h:4222?a=1&password=x": "nats://REDACTED@h:4222?a=1&password=REDACTED",
		"nats://svc:12?pw@h:4222":                 "nats://REDACTED@h:4222",
		"nats://svc:12#pw@h:4222":                 "nats://REDACTED@h:4222",
		"nats://h?servers=nats://u:pw@h2,tok@h3":  "nats://h?servers=nats%3A%2F%2FREDACTED%40h2%2CREDACTED%40h3",
		// A URL that does not parse hides its query and fragment whole.
		"nats://host:42a22?token=s3cret":            "nats://host:42a22?REDACTED",
		"redis://h:6379 /0?password=s3cret":         "redis://h:6379 /0?REDACTED",
		"amqp://h:5672/%zz?password=s3cret":         "amqp://h:5672/%zz?REDACTED",
		"kafka://bro ker:9092#sasl_password=s3cret": "kafka://bro ker:9092#REDACTED",
	} {
		if got := driver.RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
	secrets := driver.URLSecrets("nats://alice:s3cr%40t@h?api_token=tt%2Btt")
	for _, want := range []string{"s3cr@t", "s3cr%40t", "tt+tt", "tt%2Btt"} {
		if !contains(secrets, want) {
			t.Errorf("URLSecrets lacks %q: %q", want, secrets)
		}
	}
	base := errors.New("dial alice:s3cr@t failed")
	err := driver.RedactError(base, secrets...)
	if strings.Contains(err.Error(), "s3cr") || !errors.Is(err, base) {
		t.Errorf("RedactError: %v", err)
	}
	if driver.RedactError(nil, "x") != nil {
		t.Error("RedactError(nil) is not nil")
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// RedactURL ends on any input, and a password typed between "svc:" and the
// last '@' never shows, however it breaks the URL.
func FuzzRedactURL(f *testing.F) {
	for _, seed := range []string{
		"nats://svc:123/pw@h:4222", "nats://svc:12?pw@h", "nats://svc:1#pw@h", "nats://h/%40x",
		"nats://svc:1/%40@h/%40", "embedded:dir@x", "nats://h?a%40b=1", "redis://h?addrs=u:p@h2,h3",
		"nats://host:42a22?token=x", "redis://h:6379 /0?password=x",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_ = driver.RedactURL(s)
		const pw = "Zq7Secret"
		if strings.ContainsAny(s, "@%") {
			return
		}
		raw := "nats://svc:" + s + pw + "@h:4222"
		if got := driver.RedactURL(raw); strings.Contains(got, pw) {
			t.Errorf("RedactURL(%q) = %q", raw, got)
		}
	})
}
