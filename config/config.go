package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/saga"
)

// DefaultDataDir is where the defaults keep their data when data_dir is not
// set.
const DefaultDataDir = "eventbus-data"

// DefaultBackendName is the name of the embedded backend that a
// configuration without backends runs on.
const DefaultBackendName = "embedded"

// Config is a parsed, validated configuration. Build a bus from it with
// NewBus. Its URLs contain the credentials they were given; never log them
// one by one (driver.RedactURL hides them). A Config or a Backend printed
// or logged whole, or written as JSON, shows its URLs redacted.
type Config struct {
	// File names the file the configuration was read from.
	File string

	Source         string
	Instance       string
	DataDir        string
	DefaultBackend string
	QueryTimeout   time.Duration
	// Backends in the order of the file, then those declared by the
	// environment, sorted by name. Never empty: without any, the embedded
	// default.
	Backends []Backend
	Routes   []eventbus.Route
	Retry    eventbus.RetryPolicy
	// SagaStore is the saga store's URL, "" when none is declared.
	SagaStore string
	// Schemas holds the schema files and bindings of the schemas block,
	// loaded and compiled; nil when the file has none. Options sets it as
	// eventbus.Options.Schemas.
	Schemas *eventbus.Schemas

	pos     map[string]position // key → where it was set
	secrets []string
}

// Backend is a declared backend: its name and its URL, with the options of
// the file merged into the query.
type Backend struct {
	Name string
	URL  string
}

// String shows the backend with its URL redacted (driver.RedactURL).
func (b Backend) String() string { return b.Name + "=" + redactedURL(b.URL) }

func redactedURL(raw string) string {
	if raw == "" {
		return ""
	}
	return driver.RedactURL(raw)
}

// GoString is String, so that %#v shows no credential either.
func (b Backend) GoString() string { return b.String() }

// LogValue implements slog.LogValuer: a Backend logged with slog shows no
// credential.
func (b Backend) LogValue() slog.Value { return slog.StringValue(b.String()) }

// MarshalJSON writes the backend with its URL redacted.
func (b Backend) MarshalJSON() ([]byte, error) {
	type plain Backend
	return json.Marshal(plain{Name: b.Name, URL: redactedURL(b.URL)})
}

// String shows the configuration's settings, its URLs redacted
// (driver.RedactURL): printed with %v, %+v or %#v, or logged with slog, a
// Config shows no credential.
func (c Config) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config.Config{File:%q Source:%q Instance:%q DataDir:%q DefaultBackend:%q QueryTimeout:%v Backends:[",
		c.File, c.Source, c.Instance, c.DataDir, c.DefaultBackend, c.QueryTimeout)
	for i, be := range c.Backends {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(be.String())
	}
	fmt.Fprintf(&b, "] Routes:%d Retry:%+v SagaStore:%q Schemas:%v}", len(c.Routes), c.Retry, redactedURL(c.SagaStore), c.Schemas != nil)
	return b.String()
}

// GoString is String, so that %#v shows no credential either.
func (c Config) GoString() string { return c.String() }

// LogValue implements slog.LogValuer: a Config logged with slog shows no
// credential.
func (c Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

// MarshalJSON writes the configuration's exported fields with its URLs
// redacted.
func (c Config) MarshalJSON() ([]byte, error) {
	type plain Config
	p := plain(c)
	p.SagaStore = redactedURL(p.SagaStore)
	return json.Marshal(p) // the backends redact themselves
}

// Options configures loading. nil means defaults.
type Options struct {
	// LookupEnv reads an environment variable; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool)
	// Environ lists the environment as KEY=value strings, to find the
	// backends that only the environment declares; nil means os.Environ.
	Environ func() []string
}

func (o *Options) lookup() func(string) (string, bool) {
	if o != nil && o.LookupEnv != nil {
		return o.LookupEnv
	}
	return os.LookupEnv
}

func (o *Options) environ() []string {
	if o != nil && o.Environ != nil {
		return o.Environ()
	}
	if o != nil && o.LookupEnv != nil {
		return nil // a test's own environment, and only that
	}
	return os.Environ()
}

// Errors that problems match with errors.Is.
var (
	// ErrUnknownKey: the file has a key this package does not know.
	ErrUnknownKey = errors.New("unknown key")
	// ErrType: a value has the wrong type (a list for a string, text for
	// a duration...).
	ErrType = errors.New("wrong type")
	// ErrUnsetVariable: ${NAME} refers to an unset environment variable and
	// gives no default.
	ErrUnsetVariable = errors.New("unset environment variable")
	// ErrSyntax: the file is not valid YAML.
	ErrSyntax = errors.New("YAML syntax error")
)

// Problem is one problem of a configuration: where and what.
type Problem struct {
	// File is the file name, or "environment variable NAME" when the value
	// came from an override.
	File string
	// Line and Column locate the value (or the key) in File, from 1; zero
	// when unknown.
	Line, Column int
	// Key is the dotted path of the key: backends.nats.url, routes[1].backend.
	Key string
	Err error
}

func (p *Problem) Error() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", p.Line, p.Column)
	}
	if p.Key != "" {
		b.WriteString(": ")
		b.WriteString(p.Key)
	}
	b.WriteString(": ")
	b.WriteString(p.Err.Error())
	return b.String()
}

// Unwrap returns the cause.
func (p *Problem) Unwrap() error { return p.Err }

// Error lists every problem of a configuration, in file order.
type Error struct {
	Problems []*Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "config: %d problem", len(e.Problems))
	if len(e.Problems) != 1 {
		b.WriteByte('s')
	}
	for _, p := range e.Problems {
		b.WriteString("\n  ")
		b.WriteString(p.Error())
	}
	return b.String()
}

// Unwrap returns the problems.
func (e *Error) Unwrap() []error {
	out := make([]error, len(e.Problems))
	for i, p := range e.Problems {
		out[i] = p
	}
	return out
}

type position struct {
	file         string
	line, column int
}

// Load reads, expands and validates the configuration file at path. Errors
// are an *Error listing every problem, or the file's read error.
func Load(path string, opts *Options) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data, opts)
}

// Parse is Load on data already read; file names it in errors. Empty data
// (or only comments) is a valid configuration: every default.
func Parse(file string, data []byte, opts *Options) (*Config, error) {
	p := &parser{
		cfg:    &Config{File: file, pos: map[string]position{}},
		file:   file,
		lookup: opts.lookup(),
	}
	p.parse(data)
	p.overrides(opts.environ())
	p.validate()
	return p.result()
}

type parser struct {
	cfg      *Config
	file     string
	lookup   func(string) (string, bool)
	problems []*Problem
	options  map[string]map[string]optionValue // backend → option → value
	order    []string                          // backends in file order
	urls     map[string]string                 // backend → url as written
	// schemaDecl is the schemas block, nil when absent.
	schemaDecl *schemaDecl
}

type optionValue struct {
	values []string
	pos    position
}

func (p *parser) fail(pos position, key string, err error) {
	p.problems = append(p.problems, &Problem{File: pos.file, Line: pos.line, Column: pos.column, Key: key, Err: err})
}

func (p *parser) at(n *yaml.Node) position {
	return position{file: p.file, line: n.Line, column: n.Column}
}

func (p *parser) parse(data []byte) {
	if len(bytes.TrimSpace(data)) == 0 {
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		line := 0
		msg := err.Error()
		// "yaml: line 3: did not find expected key"
		if rest, ok := strings.CutPrefix(msg, "yaml: line "); ok {
			if i := strings.IndexByte(rest, ':'); i > 0 {
				line, _ = strconv.Atoi(rest[:i])
				msg = strings.TrimSpace(rest[i+1:])
			}
		} else {
			msg = strings.TrimPrefix(msg, "yaml: ")
		}
		p.fail(position{file: p.file, line: line, column: 1}, "", fmt.Errorf("%w: %s", ErrSyntax, msg))
		return
	}
	if len(doc.Content) == 0 {
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		return
	}
	p.mapping(root, "", map[string]func(string, *yaml.Node){
		"source":          p.str(&p.cfg.Source),
		"instance":        p.str(&p.cfg.Instance),
		"data_dir":        p.str(&p.cfg.DataDir),
		"default_backend": p.str(&p.cfg.DefaultBackend),
		"query_timeout":   p.duration(&p.cfg.QueryTimeout),
		"backends":        p.backends,
		"routes":          p.routes,
		"retry": func(key string, n *yaml.Node) {
			r := &p.cfg.Retry
			p.mapping(n, key, map[string]func(string, *yaml.Node){
				"max_attempts":    p.integer(&r.MaxAttempts),
				"initial_backoff": p.duration(&r.InitialBackoff),
				"max_backoff":     p.duration(&r.MaxBackoff),
			})
		},
		"saga": func(key string, n *yaml.Node) {
			p.mapping(n, key, map[string]func(string, *yaml.Node){
				"store": p.str(&p.cfg.SagaStore),
			})
		},
		"schemas": p.schemas,
	})
}

func join(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	switch n.Tag {
	case "!!null":
		return "nothing"
	case "!!bool":
		return "a boolean"
	case "!!int", "!!float":
		return "a number"
	}
	return "text"
}

// mapping calls fields[k] for each key k of n, and reports unknown keys.
// A null node is an empty mapping.
func (p *parser) mapping(n *yaml.Node, parent string, fields map[string]func(string, *yaml.Node)) {
	n, ok := p.expect(n, parent, yaml.MappingNode, "a mapping")
	if !ok {
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := join(parent, k.Value)
		if seen[k.Value] {
			p.fail(p.at(k), key, errors.New("given twice"))
			continue
		}
		seen[k.Value] = true
		f := fields[k.Value]
		if f == nil {
			known := make([]string, 0, len(fields))
			for name := range fields {
				known = append(known, name)
			}
			sort.Strings(known)
			p.fail(p.at(k), key, fmt.Errorf("%w (known: %s)", ErrUnknownKey, strings.Join(known, ", ")))
			continue
		}
		p.cfg.pos[key] = p.at(v)
		f(key, v)
	}
}

// expect resolves n and reports whether it is a non-empty node of kind,
// what in words; a null node is empty, anything else a problem.
func (p *parser) expect(n *yaml.Node, key string, kind yaml.Kind, what string) (*yaml.Node, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return n, false
	}
	if n.Kind != kind {
		p.fail(p.at(n), key, fmt.Errorf("%w: want %s, got %s", ErrType, what, kindName(n)))
		return n, false
	}
	return n, true
}

func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.DocumentNode && len(n.Content) > 0 {
		return resolve(n.Content[0])
	}
	return n
}

// scalar returns n's text with ${...} expanded, or false after reporting a
// problem.
func (p *parser) scalar(key string, n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.fail(p.at(n), key, fmt.Errorf("%w: want a single value, got %s", ErrType, kindName(n)))
		return "", false
	}
	return p.expand(p.at(n), key, n.Value)
}

func (p *parser) expand(pos position, key, s string) (string, bool) {
	out, err := expand(s, p.lookup)
	if err != nil {
		p.fail(pos, key, err)
		return "", false
	}
	return out, true
}

// expand replaces ${NAME}, ${NAME:-default} and $$ in s.
func expand(s string, lookup func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "$") {
		return s, nil
	}
	var b strings.Builder
	var errs []error
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '$' || i+1 == len(s) {
			b.WriteByte(c)
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
			continue
		case '{':
		default:
			b.WriteByte(c)
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			errs = append(errs, errors.New("${ without a closing }"))
			break
		}
		expr := s[i+2 : i+end]
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			errs = append(errs, fmt.Errorf("${%s}: not a variable name", name))
		} else if v, ok := lookup(name); ok && v != "" {
			b.WriteString(v)
		} else if hasDef {
			b.WriteString(def)
		} else {
			errs = append(errs, fmt.Errorf("%w %s (set it, or write ${%s:-default})", ErrUnsetVariable, name, name))
		}
		i += end
	}
	return b.String(), errors.Join(errs...)
}

func validEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func (p *parser) str(dst *string) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		if v, ok := p.scalar(key, n); ok {
			*dst = v
		}
	}
}

func (p *parser) duration(dst *time.Duration) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		if v, ok := p.scalar(key, n); ok {
			p.setDuration(p.at(resolve(n)), key, v, dst)
		}
	}
}

func (p *parser) setDuration(pos position, key, v string, dst *time.Duration) {
	d, err := time.ParseDuration(v)
	switch {
	case err != nil:
		p.fail(pos, key, fmt.Errorf("%w: %q is not a duration (such as 100ms or 1m30s)", ErrType, v))
	case d < 0:
		p.fail(pos, key, fmt.Errorf("%v is negative", d))
	default:
		*dst = d
	}
}

func (p *parser) integer(dst *int) func(string, *yaml.Node) {
	return func(key string, n *yaml.Node) {
		if v, ok := p.scalar(key, n); ok {
			p.setInt(p.at(resolve(n)), key, v, dst)
		}
	}
}

func (p *parser) setInt(pos position, key, v string, dst *int) {
	i, err := strconv.Atoi(v)
	switch {
	case err != nil:
		p.fail(pos, key, fmt.Errorf("%w: %q is not an integer", ErrType, v))
	case i < 0:
		p.fail(pos, key, fmt.Errorf("%d is negative", i))
	default:
		*dst = i
	}
}

func (p *parser) backends(key string, n *yaml.Node) {
	n, ok := p.expect(n, key, yaml.MappingNode, "a mapping of backend names")
	if !ok {
		return
	}
	if p.urls == nil {
		p.urls, p.options = map[string]string{}, map[string]map[string]optionValue{}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		name := k.Value
		bkey := join(key, name)
		if _, dup := p.urls[name]; dup {
			p.fail(p.at(k), bkey, errors.New("given twice"))
			continue
		}
		if err := checkName(name); err != nil {
			p.fail(p.at(k), bkey, err)
		}
		p.urls[name] = ""
		p.order = append(p.order, name)
		p.cfg.pos[bkey] = p.at(k)
		p.mapping(v, bkey, map[string]func(string, *yaml.Node){
			"url": func(ukey string, un *yaml.Node) {
				if s, ok := p.scalar(ukey, un); ok {
					p.urls[name] = s
				}
			},
			"options": func(okey string, on *yaml.Node) { p.backendOptions(name, okey, on) },
		})
		if _, ok := p.cfg.pos[bkey+".url"]; !ok {
			p.fail(p.at(k), bkey+".url", errors.New("missing: every backend needs a url"))
		}
	}
}

func checkName(name string) error {
	if name == "" {
		return errors.New("empty backend name")
	}
	for _, c := range name {
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return fmt.Errorf("backend name %q: only letters, digits, '-' and '_'", name)
		}
	}
	return nil
}

func (p *parser) backendOptions(name, key string, n *yaml.Node) {
	n, ok := p.expect(n, key, yaml.MappingNode, "a mapping of URL parameters")
	if !ok {
		return
	}
	opts := map[string]optionValue{}
	p.options[name] = opts
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolve(n.Content[i+1])
		okey := join(key, k.Value)
		if _, dup := opts[k.Value]; dup {
			p.fail(p.at(k), okey, errors.New("given twice"))
			continue
		}
		var items []*yaml.Node
		switch v.Kind {
		case yaml.ScalarNode:
			items = []*yaml.Node{v}
		case yaml.SequenceNode:
			items = v.Content
		default:
			p.fail(p.at(v), okey, fmt.Errorf("%w: want a value or a list of values, got %s", ErrType, kindName(v)))
			continue
		}
		ov := optionValue{pos: p.at(k)}
		ok := true
		for _, it := range items {
			s, good := p.scalar(okey, it)
			ok = ok && good
			ov.values = append(ov.values, s)
			if driver.SecretName(k.Value) {
				p.cfg.secrets = append(p.cfg.secrets, s)
			}
		}
		if ok {
			opts[k.Value] = ov
		}
		p.cfg.pos[okey] = p.at(k)
	}
}

func (p *parser) routes(key string, n *yaml.Node) {
	n, ok := p.expect(n, key, yaml.SequenceNode, "a list of routes")
	if !ok {
		return
	}
	for i, rn := range n.Content {
		rkey := fmt.Sprintf("%s[%d]", key, i)
		var r eventbus.Route
		p.cfg.pos[rkey] = p.at(rn)
		p.mapping(rn, rkey, map[string]func(string, *yaml.Node){
			"pattern": func(k string, v *yaml.Node) {
				s, ok := p.scalar(k, v)
				if !ok {
					return
				}
				pat, err := parsePattern(s)
				if err != nil {
					p.fail(p.at(resolve(v)), k, err)
				}
				r.Pattern = pat
			},
			"match":   p.str(&r.Match),
			"backend": p.str(&r.Backend),
			"filter": func(k string, v *yaml.Node) {
				if f, ok := p.filter(k, v); ok {
					r.Filter = f
				}
			},
			"pipeline": func(k string, v *yaml.Node) {
				if pl, ok := p.pipeline(k, v); ok {
					r.Pipeline = pl
				}
			},
		})
		if r.Pattern == eventbus.QueryPattern && !r.Filter.IsZero() {
			fkey := rkey + ".filter"
			p.fail(p.cfg.pos[fkey], fkey, fmt.Errorf("%w: queries are not routed by content", eventbus.ErrInvalidFilter))
		}
		if r.Backend == "" {
			if _, set := p.cfg.pos[rkey+".backend"]; !set {
				p.fail(p.at(rn), rkey+".backend", errors.New("missing: every route names a backend"))
			}
		}
		p.cfg.Routes = append(p.cfg.Routes, r)
	}
}

func parsePattern(s string) (eventbus.Pattern, error) {
	for _, pat := range driver.Patterns() {
		if s == pat.String() || s == pat.Prefix() {
			return pat, nil
		}
	}
	return 0, fmt.Errorf("%w: pattern %q: want event, command, query, stream or broadcast", ErrType, s)
}

// envName is the spelling of a backend name in EVENTBUS_BACKENDS_<NAME>_URL.
func envName(name string) string {
	return strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// overrides applies EVENTBUS_* variables.
func (p *parser) overrides(environ []string) {
	env := func(name string) (string, position, bool) {
		v, ok := p.lookup(name)
		if !ok || v == "" {
			return "", position{}, false
		}
		pos := position{file: "environment variable " + name}
		s, good := p.expand(pos, "", v)
		return s, pos, good
	}
	for _, s := range []struct {
		env, key string
		dst      *string
	}{
		{"EVENTBUS_SOURCE", "source", &p.cfg.Source},
		{"EVENTBUS_INSTANCE", "instance", &p.cfg.Instance},
		{"EVENTBUS_DATA_DIR", "data_dir", &p.cfg.DataDir},
		{"EVENTBUS_DEFAULT_BACKEND", "default_backend", &p.cfg.DefaultBackend},
		{"EVENTBUS_SAGA_STORE", "saga.store", &p.cfg.SagaStore},
	} {
		if v, pos, ok := env(s.env); ok {
			*s.dst = v
			p.cfg.pos[s.key] = pos
		}
	}
	if v, pos, ok := env("EVENTBUS_QUERY_TIMEOUT"); ok {
		p.setDuration(pos, "query_timeout", v, &p.cfg.QueryTimeout)
		p.cfg.pos["query_timeout"] = pos
	}
	r := &p.cfg.Retry
	if v, pos, ok := env("EVENTBUS_RETRY_MAX_ATTEMPTS"); ok {
		p.setInt(pos, "retry.max_attempts", v, &r.MaxAttempts)
	}
	if v, pos, ok := env("EVENTBUS_RETRY_INITIAL_BACKOFF"); ok {
		p.setDuration(pos, "retry.initial_backoff", v, &r.InitialBackoff)
	}
	if v, pos, ok := env("EVENTBUS_RETRY_MAX_BACKOFF"); ok {
		p.setDuration(pos, "retry.max_backoff", v, &r.MaxBackoff)
	}
	if p.urls == nil {
		p.urls, p.options = map[string]string{}, map[string]map[string]optionValue{}
	}
	byEnv := map[string]string{}
	for _, name := range p.order {
		byEnv[envName(name)] = name
	}
	var added []string
	for _, kv := range environ {
		k, _, _ := strings.Cut(kv, "=")
		mid, ok := strings.CutPrefix(k, "EVENTBUS_BACKENDS_")
		if !ok {
			continue
		}
		upper, ok := strings.CutSuffix(mid, "_URL")
		if !ok || upper == "" {
			continue
		}
		if _, declared := byEnv[upper]; !declared {
			name := strings.ToLower(upper)
			byEnv[upper] = name
			added = append(added, name)
		}
	}
	sort.Strings(added)
	for _, name := range added {
		p.order = append(p.order, name)
		p.urls[name] = ""
	}
	for _, name := range p.order {
		key := "backends." + name + ".url"
		if v, pos, ok := env("EVENTBUS_BACKENDS_" + envName(name) + "_URL"); ok {
			p.urls[name] = v
			p.cfg.pos[key] = pos
			// A backend declared only here has no missing-url problem.
			p.dropProblem(key)
		}
	}
}

func (p *parser) dropProblem(key string) {
	kept := p.problems[:0]
	for _, pr := range p.problems {
		if pr.Key != key || !strings.HasPrefix(pr.Err.Error(), "missing") {
			kept = append(kept, pr)
		}
	}
	p.problems = kept
}

// validate merges options into URLs, checks them, and checks references to
// backends.
func (p *parser) validate() {
	c := p.cfg
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	for _, name := range p.order {
		raw := p.urls[name]
		c.secrets = append(c.secrets, driver.URLSecrets(raw)...)
		if raw == "" {
			continue // reported as missing, or a bad value reported already
		}
		merged, ok := p.merge(name, raw)
		if !ok {
			continue
		}
		c.secrets = append(c.secrets, driver.URLSecrets(merged)...)
		c.Backends = append(c.Backends, Backend{Name: name, URL: merged})
		if err := driver.CheckURL(merged); err != nil {
			p.urlProblems(name, err)
		}
	}
	declared := map[string]bool{}
	for _, name := range p.order {
		declared[name] = true
	}
	if len(p.order) == 0 {
		c.Backends = []Backend{{Name: DefaultBackendName, URL: embeddedURL(c.DataDir)}}
		declared[DefaultBackendName] = true
	}
	for i, r := range c.Routes {
		if r.Backend != "" && !declared[r.Backend] {
			key := fmt.Sprintf("routes[%d].backend", i)
			p.fail(c.pos[key], key, fmt.Errorf("%w %q (declared: %s)", eventbus.ErrUnknownBackend, r.Backend, strings.Join(sortedKeys(declared), ", ")))
		}
	}
	if d := c.DefaultBackend; d != "" && !declared[d] {
		p.fail(c.pos["default_backend"], "default_backend", fmt.Errorf("%w %q (declared: %s)", eventbus.ErrUnknownBackend, d, strings.Join(sortedKeys(declared), ", ")))
	}
	if s := c.SagaStore; s != "" {
		c.secrets = append(c.secrets, driver.URLSecrets(s)...)
		if err := saga.CheckStoreURL(s); err != nil {
			p.fail(c.pos["saga.store"], "saga.store", err)
		}
	}
	p.buildSchemas()
	if r := c.Retry; r.MaxBackoff > 0 && r.InitialBackoff > r.MaxBackoff {
		p.fail(c.pos["retry.initial_backoff"], "retry.initial_backoff", fmt.Errorf("%v exceeds retry.max_backoff %v", r.InitialBackoff, r.MaxBackoff))
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// merge adds the backend's options to the URL's query.
func (p *parser) merge(name, raw string) (string, bool) {
	opts := p.options[name]
	if len(opts) == 0 {
		return raw, true
	}
	key := "backends." + name + ".url"
	u, err := driver.ParseRawURL(raw)
	if err != nil {
		p.fail(p.cfg.pos[key], key, err)
		return "", false
	}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		p.fail(p.cfg.pos[key], key, &driver.URLError{URL: driver.RedactURL(raw), Err: errors.New("malformed query")})
		return "", false
	}
	ok := true
	for _, k := range sortedOptionKeys(opts) {
		if _, both := q[k]; both {
			okey := "backends." + name + ".options." + k
			p.fail(opts[k].pos, okey, fmt.Errorf("also set in the URL's query; set it in one place"))
			ok = false
			continue
		}
		q[k] = opts[k].values
	}
	u.RawQuery = q.Encode()
	if u.Opaque == "" && u.Host == "" && u.Path == "" && strings.HasPrefix(raw, u.Scheme+"://") {
		// mem:// and embedded:// keep their slashes.
		return u.Scheme + "://?" + u.RawQuery, ok
	}
	return u.String(), ok
}

func sortedOptionKeys(m map[string]optionValue) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// urlProblems files each problem of a backend's URL under the key that set
// it: the option of a bad parameter when it came from options, else the url.
func (p *parser) urlProblems(name string, err error) {
	for _, e := range flatten(err) {
		key := "backends." + name + ".url"
		var ue *driver.URLError
		if errors.As(e, &ue) && ue.Param != "" {
			if ov, ok := p.options[name][ue.Param]; ok {
				okey := "backends." + name + ".options." + ue.Param
				p.fail(ov.pos, okey, stripURL(ue))
				continue
			}
		}
		p.fail(p.cfg.pos[key], key, e)
	}
}

// stripURL rephrases a URL error about an option without the URL, which
// the option's key already locates.
func stripURL(ue *driver.URLError) error {
	return fmt.Errorf("%w", &optionError{ue})
}

type optionError struct{ ue *driver.URLError }

func (e *optionError) Error() string { return e.ue.Err.Error() }
func (e *optionError) Unwrap() error { return e.ue }

// flatten lists the leaves of joined errors.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// embeddedURL is natsbus.EmbeddedURL, without importing natsbus.
func embeddedURL(dir string) string {
	p := filepath.ToSlash(dir)
	if filepath.IsAbs(dir) {
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
		return (&url.URL{Scheme: "embedded", Path: p}).String()
	}
	return "embedded:" + (&url.URL{Path: p}).EscapedPath()
}

func (p *parser) result() (*Config, error) {
	if len(p.problems) == 0 {
		return p.cfg, nil
	}
	sort.SliceStable(p.problems, func(i, j int) bool {
		a, b := p.problems[i], p.problems[j]
		if (a.File == p.file) != (b.File == p.file) {
			return a.File == p.file
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return nil, p.cfg.redact(&Error{Problems: p.problems})
}

// redact hides every secret of the configuration in each problem's text.
func (c *Config) redact(e *Error) *Error {
	for _, pr := range e.Problems {
		pr.Err = driver.RedactError(pr.Err, c.secrets...)
	}
	return e
}
