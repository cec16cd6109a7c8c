package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Opening drivers by URL
//
// A driver package registers its URL schemes when it is imported, the way
// database/sql drivers do, and [OpenURL] opens a driver from a URL of any
// registered scheme:
//
//	import _ "github.com/marty-msf/eventbus/natsbus" // nats://, tls://, embedded:
//
//	d, err := driver.OpenURL(ctx, "nats://nats.internal:4222?jetstream=true", nil)
//
// The scheme registry is the only global state of this package. It is filled
// by the init functions of driver packages, which do no I/O.

// OpenOptions is what a URL cannot carry. nil means defaults.
type OpenOptions struct {
	// Logger receives the driver's operational log; nil discards it.
	Logger *slog.Logger
	// ClientName identifies the connection to the broker, where the broker
	// shows one (NATS connection name, Kafka client id), unless the URL sets
	// it. Usually the bus's Source.
	ClientName string
}

// URLOpener opens a driver from a URL of the scheme it was registered for.
// The URL's scheme is lower case. Openers report a problem of one query
// parameter with a [*URLError] whose Param names it, and refuse unknown
// parameters.
type URLOpener interface {
	OpenURL(ctx context.Context, u *url.URL, opts *OpenOptions) (Driver, error)
}

// URLChecker is an optional interface of a URLOpener: CheckURL reports every
// problem of a URL without I/O, so that a configuration can be validated
// before anything is opened.
type URLChecker interface {
	CheckURL(u *url.URL) error
}

var (
	schemesMu sync.RWMutex
	schemes   = map[string]URLOpener{}
)

// futureSchemes names the package that will serve a scheme no imported
// package registered, so that the error says what to import.
var futureSchemes = map[string]string{
	"mem":      "github.com/marty-msf/eventbus/membus",
	"nats":     "github.com/marty-msf/eventbus/natsbus",
	"tls":      "github.com/marty-msf/eventbus/natsbus",
	"ws":       "github.com/marty-msf/eventbus/natsbus",
	"wss":      "github.com/marty-msf/eventbus/natsbus",
	"embedded": "github.com/marty-msf/eventbus/natsbus",
	"kafka":    "github.com/marty-msf/eventbus/kafkabus",
	"amqp":     "github.com/marty-msf/eventbus/rabbitbus",
	"amqps":    "github.com/marty-msf/eventbus/rabbitbus",
	"redis":    "github.com/marty-msf/eventbus/redisbus",
	"rediss":   "github.com/marty-msf/eventbus/redisbus",
	"aws":      "github.com/marty-msf/eventbus/awsbus",
	"sns+sqs":  "github.com/marty-msf/eventbus/awsbus",
}

// RegisterScheme makes o open URLs of scheme (case-insensitive, without
// "://"). Driver packages call it from init. Like database/sql.Register, it
// panics when scheme is not a valid URL scheme or is registered twice: both
// are programming errors of a driver package, never a user's input.
func RegisterScheme(scheme string, o URLOpener) {
	scheme = strings.ToLower(scheme)
	if !validScheme(scheme) {
		panic(fmt.Sprintf("driver: RegisterScheme: invalid scheme %q", scheme))
	}
	if o == nil {
		panic(fmt.Sprintf("driver: RegisterScheme %q: nil opener", scheme))
	}
	schemesMu.Lock()
	defer schemesMu.Unlock()
	if _, dup := schemes[scheme]; dup {
		panic(fmt.Sprintf("driver: RegisterScheme: scheme %q registered twice", scheme))
	}
	schemes[scheme] = o
}

// URLOpenerFunc adapts a function to URLOpener.
type URLOpenerFunc func(ctx context.Context, u *url.URL, opts *OpenOptions) (Driver, error)

// OpenURL calls f.
func (f URLOpenerFunc) OpenURL(ctx context.Context, u *url.URL, opts *OpenOptions) (Driver, error) {
	return f(ctx, u, opts)
}

func validScheme(s string) bool {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// Schemes lists the registered schemes, sorted.
func Schemes() []string {
	schemesMu.RLock()
	defer schemesMu.RUnlock()
	out := make([]string, 0, len(schemes))
	for s := range schemes {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// ErrUnknownScheme: no imported package registered a URL's scheme.
var ErrUnknownScheme = errors.New("unknown URL scheme")

// UnknownSchemeError reports a URL whose scheme no imported package
// registered. Package names the package that serves the scheme, when it is
// known, so that the fix is one import. It matches ErrUnknownScheme.
type UnknownSchemeError struct {
	Scheme  string
	Package string
	// Registered lists the schemes registered at the time.
	Registered []string
}

func (e *UnknownSchemeError) Error() string {
	if e.Package != "" {
		return fmt.Sprintf("unknown URL scheme %q: import %s to register it", e.Scheme, e.Package)
	}
	return fmt.Sprintf("unknown URL scheme %q (registered: %s)", e.Scheme, strings.Join(e.Registered, ", "))
}

// Is reports whether target is ErrUnknownScheme.
func (e *UnknownSchemeError) Is(target error) bool { return target == ErrUnknownScheme }

// URLError reports a URL that cannot be opened as written: malformed, with a
// missing or unknown scheme, or with a bad query parameter (Param names it).
// URL is redacted: it never holds a password or token.
type URLError struct {
	URL   string
	Param string
	Err   error
}

func (e *URLError) Error() string {
	var b strings.Builder
	b.WriteString("URL ")
	b.WriteString(strconv.Quote(e.URL))
	if e.Param != "" {
		b.WriteString(": parameter ")
		b.WriteString(strconv.Quote(e.Param))
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (e *URLError) Unwrap() error { return e.Err }

// ErrUnknownParam: a URL carries a query parameter its driver does not know.
var ErrUnknownParam = errors.New("unknown parameter")

// ParseRawURL parses rawURL as url.Parse does and reports a failure as a
// *URLError whose URL carries no credentials (url.Parse's own error quotes
// the whole URL). Every ParseURL of a driver or store starts with it.
func ParseRawURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, &URLError{URL: RedactURL(rawURL), Err: errors.New("not a URL")}
	}
	return u, nil
}

// ParseURL parses rawURL and finds its opener. Errors are *URLError and never
// contain the URL's credentials.
func ParseURL(rawURL string) (*url.URL, URLOpener, error) {
	u, err := ParseRawURL(rawURL)
	if err != nil {
		return nil, nil, err
	}
	if u.Scheme == "" {
		return nil, nil, &URLError{URL: RedactURL(rawURL), Err: errors.New("no scheme (want one such as nats://, mem:// or embedded:)")}
	}
	u.Scheme = strings.ToLower(u.Scheme)
	schemesMu.RLock()
	o := schemes[u.Scheme]
	schemesMu.RUnlock()
	if o == nil {
		return nil, nil, &URLError{URL: RedactURL(rawURL), Err: &UnknownSchemeError{Scheme: u.Scheme, Package: futureSchemes[u.Scheme], Registered: Schemes()}}
	}
	return u, o, nil
}

// CheckURL reports every problem of rawURL that can be found without I/O:
// its syntax, its scheme, and, when the driver implements URLChecker, its
// parameters.
func CheckURL(rawURL string) error {
	u, o, err := ParseURL(rawURL)
	if err != nil {
		return err
	}
	if c, ok := o.(URLChecker); ok {
		return c.CheckURL(u)
	}
	return nil
}

// OpenURL opens a driver from rawURL with the opener registered for its
// scheme. Errors never contain the URL's credentials.
func OpenURL(ctx context.Context, rawURL string, opts *OpenOptions) (Driver, error) {
	u, o, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	if opts == nil {
		opts = &OpenOptions{}
	}
	d, err := o.OpenURL(ctx, u, opts)
	if err != nil {
		return nil, RedactError(err, URLSecrets(rawURL)...)
	}
	if d == nil {
		return nil, &URLError{URL: RedactURL(rawURL), Err: errors.New("the driver's opener returned no driver")}
	}
	return d, nil
}

// RedactURL returns rawURL with its user information replaced by "REDACTED"
// (a bare user name may be a token) and the values of query parameters whose
// names suggest a secret likewise, as well as the user information of URLs
// in parameter values (servers=nats://u:p@h); a query that does not parse
// is hidden whole. A string that does not parse as a URL loses everything
// up to its last '@' and everything after its first '?' or '#', and a URL
// loses everything up to its last '@' when it has one in its path, fragment
// or a parameter name: the sign of a password with an unescaped '/', '#'
// or '?', whose rest would show there.
func RedactURL(rawURL string) string { return redactURL(rawURL, true) }

func redactURL(rawURL string, checkStray bool) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		s := rawURL
		if i := strings.LastIndex(s, "@"); i >= 0 {
			s = "REDACTED@" + s[i+1:]
		}
		// The query and fragment of a URL that does not parse may hold
		// secrets (?password=...): hide them whole.
		if i := strings.IndexAny(s, "?#"); i >= 0 {
			s = s[:i+1] + "REDACTED"
		}
		return s
	}
	// An '@' decoded from %40 is no sign of a mistyped password: only a
	// literal one is.
	if i := strings.LastIndex(rawURL, "@"); i >= 0 && checkStray && strayAt(u) {
		return redactURL(u.Scheme+"://REDACTED@"+rawURL[i+1:], false)
	}
	if u.User != nil {
		u.User = url.User("REDACTED")
	}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			// The parts that do not parse would show as written.
			u.RawQuery = "REDACTED"
			return display(u)
		}
		changed := false
		for k, vs := range q {
			switch {
			case SecretName(k):
				q[k] = []string{"REDACTED"}
				changed = true
			case strings.Contains(strings.Join(vs, ""), "@"):
				for i, v := range vs {
					vs[i] = redactUserInfo(v)
				}
				changed = true
			}
		}
		if changed {
			u.RawQuery = q.Encode()
		}
	}
	return display(u)
}

// strayAt reports an '@' where a well-formed URL has none: after its
// authority, outside parameter values.
func strayAt(u *url.URL) bool {
	if strings.Contains(u.Path, "@") || strings.Contains(u.Fragment, "@") || strings.Contains(u.Opaque, "@") {
		return true
	}
	for _, pair := range strings.Split(u.RawQuery, "&") {
		if k, _, _ := strings.Cut(pair, "="); strings.Contains(k, "@") {
			return true
		}
	}
	return false
}

// redactUserInfo hides the user information of each URL in a
// comma-separated parameter value.
func redactUserInfo(v string) string {
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			scheme, _, ok := strings.Cut(p[:at], "://")
			if ok {
				parts[i] = scheme + "://REDACTED@" + p[at+1:]
			} else {
				parts[i] = "REDACTED@" + p[at+1:]
			}
		}
	}
	return strings.Join(parts, ",")
}

// URLSecrets lists the secrets rawURL carries: its password, or a bare user
// name (which may be a token), and the values of secret-named parameters,
// in raw and decoded form.
func URLSecrets(rawURL string) []string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil
	}
	var out []string
	add := func(s string) {
		if s != "" {
			out = append(out, s)
			if e := url.QueryEscape(s); e != s {
				out = append(out, e)
			}
			if e := url.PathEscape(s); e != s {
				out = append(out, e)
			}
		}
	}
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			add(p)
		} else {
			add(u.User.Username())
		}
	}
	for k, vs := range u.Query() {
		if SecretName(k) {
			for _, v := range vs {
				add(v)
			}
		}
	}
	return out
}

// SecretName reports whether a parameter or field name suggests that its
// value is a secret: it contains password, secret, token or key (but not a
// file name of one, as in key_file).
func SecretName(name string) bool {
	n := strings.ToLower(name)
	if strings.HasSuffix(n, "file") || strings.HasSuffix(n, "path") {
		return false
	}
	for _, s := range []string{"password", "passwd", "secret", "token", "key"} {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// RedactError returns err with every secret replaced by "REDACTED" in its
// text. The result still unwraps to err, so errors.Is and errors.As work.
func RedactError(err error, secrets ...string) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	changed := false
	// Longest first, so that a secret containing another is hidden whole.
	sorted := append([]string(nil), secrets...)
	sort.Slice(sorted, func(i, j int) bool { return len(sorted[i]) > len(sorted[j]) })
	for _, s := range sorted {
		if len(s) >= 3 && strings.Contains(msg, s) {
			msg = strings.ReplaceAll(msg, s, "REDACTED")
			changed = true
		}
	}
	if !changed {
		return err
	}
	return &redactedError{msg: msg, err: err}
}

type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// Params reads the query parameters of a URL into a driver's options and
// collects every problem: a value of the wrong form, and, at Err, every
// parameter that no method asked for. Names are case-sensitive; a parameter
// given twice is an error unless read with Strings.
type Params struct {
	u      *url.URL
	q      url.Values
	seen   map[string]bool
	errs   []error
	redact string
}

// NewParams reads u's query.
func NewParams(u *url.URL) *Params {
	p := &Params{u: u, seen: map[string]bool{}, redact: RedactURL(display(u))}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		p.errs = append(p.errs, &URLError{URL: p.redact, Err: errors.New("malformed query")})
	}
	p.q = q
	return p
}

// display writes u as written: url.URL drops the "//" of an empty
// authority, which mem:// has.
func display(u *url.URL) string {
	if u.Host == "" && u.User == nil && u.Path == "" && u.Opaque == "" && !u.OmitHost {
		s := u.Scheme + "://"
		if u.RawQuery != "" {
			s += "?" + u.RawQuery
		}
		return s
	}
	return u.String()
}

// Fail records a problem of parameter name (or of the URL itself when name
// is empty).
func (p *Params) Fail(name string, err error) {
	p.errs = append(p.errs, &URLError{URL: p.redact, Param: name, Err: err})
}

func (p *Params) value(name string) (string, bool) {
	vs, ok := p.q[name]
	if !ok {
		return "", false
	}
	p.seen[name] = true
	if len(vs) > 1 {
		p.Fail(name, errors.New("given more than once"))
		return "", false
	}
	return vs[0], true
}

// Has reports whether name is present, without marking it read.
func (p *Params) Has(name string) bool { _, ok := p.q[name]; return ok }

// String sets *dst to the value of name, when present.
func (p *Params) String(name string, dst *string) {
	if v, ok := p.value(name); ok {
		*dst = v
	}
}

// Strings appends to *dst the values of name, each split at commas.
func (p *Params) Strings(name string, dst *[]string) {
	vs, ok := p.q[name]
	if !ok {
		return
	}
	p.seen[name] = true
	for _, v := range vs {
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				*dst = append(*dst, s)
			}
		}
	}
}

// Bool sets *dst from name: true, false, 1, 0 (and the other forms
// strconv.ParseBool accepts); an empty value means true.
func (p *Params) Bool(name string, dst *bool) {
	v, ok := p.value(name)
	if !ok {
		return
	}
	if v == "" {
		*dst = true
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		p.Fail(name, fmt.Errorf("%q is not a boolean", v))
		return
	}
	*dst = b
}

// BoolPtr is Bool for an optional setting: *dst is set only when name is
// present.
func (p *Params) BoolPtr(name string, dst **bool) {
	if !p.Has(name) {
		return
	}
	var b bool
	n := len(p.errs)
	p.Bool(name, &b)
	if len(p.errs) == n {
		*dst = &b
	}
}

// Int sets *dst from name, a decimal integer.
func (p *Params) Int(name string, dst *int) {
	var n int64
	if p.int(name, &n, strconv.IntSize) {
		*dst = int(n)
	}
}

// Int32 sets *dst from name, a decimal integer.
func (p *Params) Int32(name string, dst *int32) {
	var n int64
	if p.int(name, &n, 32) {
		*dst = int32(n)
	}
}

// Int64 sets *dst from name, a decimal integer.
func (p *Params) Int64(name string, dst *int64) { p.int(name, dst, 64) }

func (p *Params) int(name string, dst *int64, bits int) bool {
	v, ok := p.value(name)
	if !ok {
		return false
	}
	n, err := strconv.ParseInt(v, 10, bits)
	if err != nil {
		p.Fail(name, fmt.Errorf("%q is not an integer (or is out of range)", v))
		return false
	}
	*dst = n
	return true
}

// Duration sets *dst from name, a Go duration such as 30s or 1m30s.
func (p *Params) Duration(name string, dst *time.Duration) {
	v, ok := p.value(name)
	if !ok {
		return
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		p.Fail(name, fmt.Errorf("%q is not a duration (such as 30s or 1m30s)", v))
		return
	}
	*dst = d
}

// Err reports every problem found so far and every parameter that was never
// read (matching ErrUnknownParam), sorted by name, joined.
func (p *Params) Err() error {
	errs := p.errs
	var unknown []string
	for k := range p.q {
		if !p.seen[k] {
			unknown = append(unknown, k)
		}
	}
	sort.Strings(unknown)
	if len(unknown) == 0 {
		return errors.Join(errs...)
	}
	// An unknown parameter may be a secret's misspelt name (pasword=):
	// its value is hidden too.
	shown := p.redact
	if u, err := url.Parse(p.redact); err == nil {
		q := u.Query()
		for _, k := range unknown {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
		shown = display(u)
	}
	for _, k := range unknown {
		errs = append(errs, &URLError{URL: shown, Param: k, Err: ErrUnknownParam})
	}
	return errors.Join(errs...)
}
