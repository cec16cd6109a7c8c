package eventbus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cesql "github.com/cloudevents/sdk-go/sql/v2"
	cesqlfn "github.com/cloudevents/sdk-go/sql/v2/function"
	cesqlparser "github.com/cloudevents/sdk-go/sql/v2/parser"
	cesqlruntime "github.com/cloudevents/sdk-go/sql/v2/runtime"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/tidwall/gjson"

	"github.com/marty-msf/eventbus/driver"
)

// ErrInvalidFilter: a filter is malformed (a CESQL syntax error, an
// attribute name outside the CloudEvents rule, an empty All or Any, a filter
// where none is allowed). errors.As with *FilterError says which.
var ErrInvalidFilter = errors.New("invalid filter")

// FilterError reports a filter that does not compile. It matches
// ErrInvalidFilter.
type FilterError struct {
	// Filter is the filter's text, as Filter.String gives it.
	Filter string
	Err    error
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("invalid filter %s: %v", e.Filter, e.Err)
}

// Unwrap returns the cause.
func (e *FilterError) Unwrap() error { return e.Err }

// Is makes a FilterError match ErrInvalidFilter.
func (e *FilterError) Is(target error) bool { return target == ErrInvalidFilter }

type filterOp uint8

const (
	opNone filterOp = iota
	opExact
	opPrefix
	opSuffix
	opAll
	opAny
	opNot
	opSQL
)

// Filter selects messages by content, in the dialects of the CloudEvents
// Subscriptions API: Exact, Prefix and Suffix over one attribute, All, Any
// and Not over other filters, and SQL (CloudEvents SQL, CESQL) over the
// attributes and, through the DATA function, the data.
//
// Attribute names are CloudEvents names: id, source, specversion, type,
// subject, time (RFC 3339), datacontenttype, dataschema, the extensions the
// bus carries (correlationid, causationid, traceparent, tracestate, replyto;
// partitionkey is the message Key) and any name of Message.Extensions. An
// attribute the message lacks matches no Exact, Prefix or Suffix.
//
// A Filter is a value; it is compiled once where it is used (WithFilter,
// Route.Filter, Bridge.Filter, CompileFilter), and a malformed one is a
// *FilterError there, never at the first message. The zero Filter matches
// everything.
type Filter struct {
	op          filterOp
	attr, value string
	subs        []Filter
}

// Exact matches messages whose attribute equals value.
func Exact(attribute, value string) Filter {
	return Filter{op: opExact, attr: attribute, value: value}
}

// Prefix matches messages whose attribute starts with value.
func Prefix(attribute, value string) Filter {
	return Filter{op: opPrefix, attr: attribute, value: value}
}

// Suffix matches messages whose attribute ends with value.
func Suffix(attribute, value string) Filter {
	return Filter{op: opSuffix, attr: attribute, value: value}
}

// All matches messages that every filter matches (at least one filter).
func All(filters ...Filter) Filter { return Filter{op: opAll, subs: filters} }

// Any matches messages that at least one filter matches (at least one
// filter).
func Any(filters ...Filter) Filter { return Filter{op: opAny, subs: filters} }

// Not matches messages that f does not match.
func Not(f Filter) Filter { return Filter{op: opNot, subs: []Filter{f}} }

// SQL matches messages for which the CloudEvents SQL expression is true.
// Besides the CESQL built-ins, the function DATA(path) gives the value at a
// dot-separated path ("order.amount", "items.0.sku") of a JSON payload as a
// string: a JSON string as is, a number or boolean as written, an object or
// array as its compact JSON text (keys in the payload's order), and an empty
// string for null, an absent path or data that is not JSON. Path components
// are keys or array indexes, nothing else (no wildcards). Cast it for
// comparisons: INT(DATA('amount')) > 100. DATA reads the payload in place
// without decoding it, and an expression is evaluated against only the
// attributes it names, so a CESQL filter costs about a microsecond per
// message; attribute filters (Exact, Prefix, ...) cost nothing measurable.
//
// An expression that fails to evaluate (a missing attribute, a failed cast)
// or whose value is not a boolean does not match, as the CESQL
// specification asks of subscription filters.
func SQL(expression string) Filter { return Filter{op: opSQL, value: expression} }

// IsZero reports whether f is the zero Filter, which matches everything.
func (f Filter) IsZero() bool { return f.op == opNone }

// String returns f in the JSON form of the CloudEvents Subscriptions API.
func (f Filter) String() string {
	var b strings.Builder
	f.write(&b)
	return b.String()
}

func (f Filter) write(b *strings.Builder) {
	name := [...]string{"", "exact", "prefix", "suffix", "all", "any", "not", "sql"}[f.op]
	switch f.op {
	case opNone:
		b.WriteString("{}")
	case opExact, opPrefix, opSuffix:
		fmt.Fprintf(b, `{%q:{%q:%q}}`, name, f.attr, f.value)
	case opSQL:
		fmt.Fprintf(b, `{%q:%q}`, name, f.value)
	case opNot:
		fmt.Fprintf(b, `{%q:`, name)
		f.subs[0].write(b)
		b.WriteByte('}')
	case opAll, opAny:
		fmt.Fprintf(b, `{%q:[`, name)
		for i, s := range f.subs {
			if i > 0 {
				b.WriteByte(',')
			}
			s.write(b)
		}
		b.WriteString("]}")
	}
}

// Matcher is a compiled Filter. It is safe for concurrent use.
type Matcher struct {
	root   matchNode
	filter Filter
}

// CompileFilter compiles f, so that it can be tested alone or used outside a
// subscription. Errors match ErrInvalidFilter and unwrap to a *FilterError
// (errors.As).
func CompileFilter(f Filter) (*Matcher, error) {
	mt, err := compileFilter(f)
	if err != nil {
		return nil, fmt.Errorf("eventbus: %w", err)
	}
	return mt, nil
}

// compileFilter is CompileFilter for the bus's own operations, which add
// their context to its *FilterError.
func compileFilter(f Filter) (*Matcher, error) {
	root, err := compileNode(f)
	if err != nil {
		return nil, &FilterError{Filter: f.String(), Err: err}
	}
	return &Matcher{root: root, filter: f}, nil
}

// Match reports whether m passes the filter. A nil Matcher matches
// everything.
func (mt *Matcher) Match(m *Message) bool {
	if mt == nil || mt.root == nil {
		return true
	}
	return mt.root.match(m)
}

// Filter returns the filter mt was compiled from.
func (mt *Matcher) Filter() Filter { return mt.filter }

// brokerSelect returns the part of the filter that a broker may apply on
// dest before delivering: the Exact filters that the whole filter is a
// conjunction of (a lone Exact, or the Exact members of a top-level All, of
// an All within it, and so on), never one under Any, Not or SQL. Only
// events and commands take one; an Exact on type is left out (the
// destination is the type already), and so is an Exact on an empty value
// (whether an empty attribute is carried at all differs between
// backends). A name that occurs twice keeps its first value: the filter
// then matches nothing, which the bus sees to. The result is implied by the
// filter, so whatever the broker applies of it, the bus still evaluates
// the whole filter on what arrives.
func (mt *Matcher) brokerSelect(dest driver.Destination) []driver.AttributeMatch {
	if mt == nil || (dest.Pattern != driver.Event && dest.Pattern != driver.Command) {
		return nil
	}
	var out []driver.AttributeMatch
	var walk func(f Filter)
	walk = func(f Filter) {
		switch f.op {
		case opExact:
			if f.attr == "type" || f.value == "" {
				return
			}
			for _, m := range out {
				if m.Name == f.attr {
					return
				}
			}
			out = append(out, driver.AttributeMatch{Name: f.attr, Value: f.value})
		case opAll:
			for _, s := range f.subs {
				walk(s)
			}
		}
	}
	walk(mt.filter)
	return out
}

type matchNode interface {
	match(m *Message) bool
}

func compileNode(f Filter) (matchNode, error) {
	switch f.op {
	case opNone:
		return nil, nil
	case opExact, opPrefix, opSuffix:
		if p := attributeNameProblem(f.attr); p != "" {
			return nil, fmt.Errorf("attribute %q: %s", f.attr, p)
		}
		return attrNode{op: f.op, attr: f.attr, value: f.value}, nil
	case opAll, opAny:
		if len(f.subs) == 0 {
			return nil, errors.New("all and any need at least one filter")
		}
		nodes := make([]matchNode, 0, len(f.subs))
		for _, s := range f.subs {
			n, err := compileNode(s)
			if err != nil {
				return nil, err
			}
			if n == nil {
				n = allNode(nil) // the zero Filter matches everything
			}
			nodes = append(nodes, n)
		}
		if f.op == opAll {
			return allNode(nodes), nil
		}
		return anyNode(nodes), nil
	case opNot:
		n, err := compileNode(f.subs[0])
		if err != nil {
			return nil, err
		}
		if n == nil {
			return nil, errors.New("not of the zero filter matches nothing")
		}
		return notNode{n}, nil
	case opSQL:
		return compileSQL(f.value)
	}
	return nil, fmt.Errorf("unknown filter operator %d", f.op)
}

// attributeNameProblem checks a CloudEvents attribute name: lower-case ASCII
// letters and digits.
func attributeNameProblem(name string) string {
	if name == "" {
		return "empty name"
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "a CloudEvents attribute name has only lower-case letters and digits"
		}
	}
	return ""
}

type attrNode struct {
	op          filterOp
	attr, value string
}

func (n attrNode) match(m *Message) bool {
	v, ok := attribute(m, n.attr)
	if !ok {
		return false
	}
	switch n.op {
	case opExact:
		return v == n.value
	case opPrefix:
		return strings.HasPrefix(v, n.value)
	default:
		return strings.HasSuffix(v, n.value)
	}
}

type allNode []matchNode

func (n allNode) match(m *Message) bool {
	for _, s := range n {
		if !s.match(m) {
			return false
		}
	}
	return true
}

type anyNode []matchNode

func (n anyNode) match(m *Message) bool {
	for _, s := range n {
		if s.match(m) {
			return true
		}
	}
	return false
}

type notNode struct{ n matchNode }

func (n notNode) match(m *Message) bool { return !n.n.match(m) }

// attribute returns the value of the CloudEvents attribute name of m, and
// whether m has it.
func attribute(m *Message, name string) (string, bool) {
	var v string
	switch name {
	case "id":
		return m.ID, true
	case "source":
		return m.Source, true
	case "type":
		return m.Type, true
	case "specversion":
		return driver.SpecVersion, true
	case "time":
		if m.Time.IsZero() {
			return "", false
		}
		return m.Time.UTC().Format(time.RFC3339Nano), true
	case "subject":
		v = m.Subject
	case "datacontenttype":
		v = m.DataContentType
	case "dataschema":
		v = m.DataSchema
	case driver.ExtCorrelationID:
		v = m.CorrelationID
	case driver.ExtCausationID:
		v = m.CausationID
	case driver.ExtTraceParent:
		v = m.TraceParent
	case driver.ExtTraceState:
		v = m.TraceState
	case driver.ExtReplyTo:
		v = m.ReplyTo
	case driver.ExtPartitionKey:
		v = m.Key
	default:
		v, ok := m.Extensions[name]
		return v, ok
	}
	return v, v != ""
}

type sqlNode struct {
	expr cesql.Expression
	// needs says which attributes the expression can read: only those are
	// copied into the SDK event it is evaluated against.
	needs sqlNeeds
}

// sqlNeeds is the set of attribute names that occur as words in a CESQL
// expression: a superset of the attributes it reads, since every attribute
// it names is such a word.
type sqlNeeds struct {
	words map[string]struct{}
}

func (n sqlNeeds) has(name string) bool {
	_, ok := n.words[name]
	return ok
}

// wordsOf returns the lower-cased identifier words of a CESQL expression
// outside its string literals.
func wordsOf(src string) map[string]struct{} {
	words := make(map[string]struct{})
	for i := 0; i < len(src); {
		c := src[i]
		switch {
		case c == '\'' || c == '"':
			// A literal: skip to its closing quote (a doubled quote escapes).
			j := i + 1
			for j < len(src) {
				if src[j] == c {
					if j+1 < len(src) && src[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			i = j + 1
		case isWordChar(c):
			j := i
			for j < len(src) && isWordChar(src[j]) {
				j++
			}
			words[strings.ToLower(src[i:j])] = struct{}{}
			i = j
		default:
			i++
		}
	}
	return words
}

func isWordChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

var registerDataFunction sync.Once

func compileSQL(src string) (matchNode, error) {
	registerDataFunction.Do(func() {
		// DATA is ours; an error means a function of that name and arity is
		// registered already, which then serves.
		_ = cesqlruntime.AddFunction(cesqlfn.NewFunction("DATA",
			[]cesql.Type{cesql.StringType}, nil, cesql.StringType, dataFunction))
	})
	if strings.TrimSpace(src) == "" {
		return nil, errors.New("empty CESQL expression")
	}
	expr, err := parseSQL(src)
	if err != nil {
		return nil, fmt.Errorf("CESQL: %w", err)
	}
	return sqlNode{expr: expr, needs: sqlNeeds{words: wordsOf(src)}}, nil
}

// parseSQL parses a CESQL expression. The SDK's parser panics on some
// syntax errors (its error listener reads a recognition exception that the
// parser leaves nil); that is a syntax error too.
func parseSQL(src string) (expr cesql.Expression, err error) {
	defer func() {
		if r := recover(); r != nil {
			expr, err = nil, fmt.Errorf("syntax error in %q", src)
		}
	}()
	return cesqlparser.Parse(src)
}

// eventContexts recycles the SDK event contexts that expressions are
// evaluated against: an evaluation does not keep its event.
var eventContexts = sync.Pool{New: func() any { return new(event.EventContextV1) }}

func (n sqlNode) match(m *Message) bool {
	ec := eventContexts.Get().(*event.EventContextV1)
	fillContext(ec, m, n.needs)
	v, err := n.expr.Evaluate(event.Event{Context: ec, DataEncoded: m.Data})
	exts := ec.Extensions
	clear(exts)
	*ec = event.EventContextV1{Extensions: exts}
	eventContexts.Put(ec)
	b, ok := v.(bool)
	return err == nil && ok && b
}

// fillContext copies into ec the attributes of m that the expression can
// read (all of them when needs is empty, as for an expression that names
// none). Attribute values the SDK would refuse (a source or dataschema that
// is not a URI reference, an extension name outside the CloudEvents rule)
// are left out, so that an expression naming them does not match.
func fillContext(ec *event.EventContextV1, m *Message, needs sqlNeeds) {
	need := func(name string) bool { return needs.words == nil || needs.has(name) }
	ec.ID = m.ID
	ec.Type = m.Type
	if need("source") {
		if u, ok := uriRef(m.Source); ok {
			ec.Source = u
		}
	}
	if m.Subject != "" && need("subject") {
		ec.Subject = &m.Subject
	}
	if !m.Time.IsZero() && need("time") {
		ec.Time = &types.Timestamp{Time: m.Time}
	}
	if m.DataContentType != "" && need("datacontenttype") {
		ec.DataContentType = &m.DataContentType
	}
	if m.DataSchema != "" && need("dataschema") {
		if u, ok := uriRef(m.DataSchema); ok {
			ec.DataSchema = &types.URI{URL: u.URL}
		}
	}
	ext := func(name, value string) {
		if value == "" || !need(name) || !event.IsExtensionNameValid(name) || spec.V1.Attribute(name) != nil {
			return
		}
		if ec.Extensions == nil {
			ec.Extensions = make(map[string]any, 4)
		}
		ec.Extensions[name] = value
	}
	ext(driver.ExtCorrelationID, m.CorrelationID)
	ext(driver.ExtCausationID, m.CausationID)
	ext(driver.ExtTraceParent, m.TraceParent)
	ext(driver.ExtTraceState, m.TraceState)
	ext(driver.ExtReplyTo, m.ReplyTo)
	ext(driver.ExtPartitionKey, m.Key)
	for k, v := range m.Extensions {
		ext(k, v)
	}
}

// uriRefs caches parsed sources and schemas: a bus sees few of them, and
// parsing one per message would be most of a filter's cost.
var (
	uriRefs     sync.Map // string → types.URIRef
	uriRefCount atomic.Int32
)

// maxURIRefs bounds the cache; past it, values are parsed each time.
const maxURIRefs = 4096

func uriRef(s string) (types.URIRef, bool) {
	if v, ok := uriRefs.Load(s); ok {
		return v.(types.URIRef), true
	}
	u, err := url.Parse(s)
	if err != nil {
		return types.URIRef{}, false
	}
	ref := types.URIRef{URL: *u}
	if uriRefCount.Load() < maxURIRefs {
		if _, loaded := uriRefs.LoadOrStore(s, ref); !loaded {
			uriRefCount.Add(1)
		}
	}
	return ref, true
}

// dataFunction is CESQL's DATA(path).
func dataFunction(e event.Event, args []any) (any, error) {
	path, _ := args[0].(string)
	return dataAt(e.DataEncoded, path), nil
}

// dataPaths caches DATA paths translated to gjson's path syntax.
var (
	dataPaths     sync.Map // string → string
	dataPathCount atomic.Int32
)

// dataAt returns the value at the dot-separated path of the JSON document
// data, as DATA documents it. It reads the document in place, without
// decoding it.
func dataAt(data []byte, path string) string {
	if !gjson.ValidBytes(data) {
		return ""
	}
	var r gjson.Result
	if path == "" {
		r = gjson.ParseBytes(data)
	} else {
		r = gjson.GetBytes(data, gjsonPath(path))
	}
	switch r.Type {
	case gjson.Null:
		return ""
	case gjson.String:
		return r.Str
	}
	if r.Type == gjson.JSON {
		// An object or array: its compact JSON text.
		var b bytes.Buffer
		if json.Compact(&b, []byte(r.Raw)) == nil {
			return b.String()
		}
	}
	return r.Raw
}

// gjsonPath translates a DATA path ("order.items.0.sku") into gjson's
// syntax, in which each component is escaped so that none of gjson's
// operators (wildcards, queries, modifiers) apply.
func gjsonPath(path string) string {
	if v, ok := dataPaths.Load(path); ok {
		return v.(string)
	}
	parts := strings.Split(path, ".")
	for i, p := range parts {
		parts[i] = gjson.Escape(p)
	}
	g := strings.Join(parts, ".")
	if dataPathCount.Load() < maxURIRefs {
		if _, loaded := dataPaths.LoadOrStore(path, g); !loaded {
			dataPathCount.Add(1)
		}
	}
	return g
}
