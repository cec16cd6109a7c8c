package config

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/driver"
)

// This file parses what routes and the bus look at in messages: a route's
// filter and pipeline, and the schemas block.

// filterDialects are the keys of a filter, the dialects of the CloudEvents
// Subscriptions API.
var filterDialects = []string{"all", "any", "exact", "not", "prefix", "sql", "suffix"}

// stepKinds are the keys of a pipeline step.
var stepKinds = []string{"keep", "redact_json", "rename_extension", "set_extension"}

// filterProblem is a filter that does not compile, told without repeating
// the filter (the key locates it). It matches eventbus.ErrInvalidFilter and,
// with errors.As, gives the *eventbus.FilterError.
type filterProblem struct{ fe *eventbus.FilterError }

func (e *filterProblem) Error() string { return "invalid filter: " + e.fe.Err.Error() }
func (e *filterProblem) Unwrap() error { return e.fe }

// compiles reports whether f compiles, and files the problem at n if not.
func (p *parser) compiles(key string, n *yaml.Node, f eventbus.Filter) bool {
	_, err := eventbus.CompileFilter(f)
	if err == nil {
		return true
	}
	var fe *eventbus.FilterError
	if errors.As(err, &fe) {
		err = &filterProblem{fe}
	}
	p.fail(p.at(n), key, err)
	return false
}

// single returns the one key and value of the mapping n, which must have
// exactly one key among known; what names n in problems.
func (p *parser) single(key string, n *yaml.Node, what string, known []string) (k, v *yaml.Node, ok bool) {
	n = resolve(n)
	if n.Kind != yaml.MappingNode {
		p.fail(p.at(n), key, fmt.Errorf("%w: want %s (a mapping with one of %s), got %s", ErrType, what, strings.Join(known, ", "), kindName(n)))
		return nil, nil, false
	}
	if len(n.Content) != 2 {
		p.fail(p.at(n), key, fmt.Errorf("%w: %s has exactly one key, one of %s; got %d", ErrType, what, strings.Join(known, ", "), len(n.Content)/2))
		return nil, nil, false
	}
	k, v = n.Content[0], n.Content[1]
	if i := sort.SearchStrings(known, k.Value); i == len(known) || known[i] != k.Value {
		p.fail(p.at(k), join(key, k.Value), fmt.Errorf("%w (known: %s)", ErrUnknownKey, strings.Join(known, ", ")))
		return nil, nil, false
	}
	p.cfg.pos[join(key, k.Value)] = p.at(v)
	return k, v, true
}

// filter parses a filter in the form of the CloudEvents Subscriptions API:
// {exact: {attr: value}}, {prefix: ...}, {suffix: ...}, {all: [filters]},
// {any: [filters]}, {not: filter}, {sql: "expression"}; a list of filters
// is all of them. Every part is compiled here, so that a problem is filed
// at the line that causes it. A null node is the zero Filter.
func (p *parser) filter(key string, n *yaml.Node) (eventbus.Filter, bool) {
	n = resolve(n)
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return eventbus.Filter{}, true
	}
	if n.Kind == yaml.SequenceNode {
		subs, ok := p.filterList(key, n)
		if !ok {
			return eventbus.Filter{}, false
		}
		return eventbus.All(subs...), true
	}
	k, v, ok := p.single(key, n, "a filter", filterDialects)
	if !ok {
		return eventbus.Filter{}, false
	}
	dkey := join(key, k.Value)
	switch k.Value {
	case "exact", "prefix", "suffix":
		v = resolve(v)
		if v.Kind != yaml.MappingNode || len(v.Content) != 2 {
			p.fail(p.at(v), dkey, fmt.Errorf("%w: want one attribute and its value ({type: order.created}); for several, write all: [...]", ErrType))
			return eventbus.Filter{}, false
		}
		an := v.Content[0]
		akey := join(dkey, an.Value)
		val, ok := p.scalar(akey, v.Content[1])
		if !ok {
			return eventbus.Filter{}, false
		}
		f := map[string]func(string, string) eventbus.Filter{
			"exact": eventbus.Exact, "prefix": eventbus.Prefix, "suffix": eventbus.Suffix,
		}[k.Value](an.Value, val)
		return f, p.compiles(akey, an, f)
	case "all", "any":
		sn, ok := p.expect(v, dkey, yaml.SequenceNode, "a list of filters")
		if !ok {
			if sn.Kind == yaml.ScalarNode && sn.Tag == "!!null" {
				p.fail(p.at(sn), dkey, fmt.Errorf("%w: %s needs at least one filter", eventbus.ErrInvalidFilter, k.Value))
			}
			return eventbus.Filter{}, false
		}
		subs, ok := p.filterList(dkey, sn)
		if !ok {
			return eventbus.Filter{}, false
		}
		if k.Value == "all" {
			return eventbus.All(subs...), true
		}
		return eventbus.Any(subs...), true
	case "not":
		sub, ok := p.filter(dkey, v)
		if !ok {
			return eventbus.Filter{}, false
		}
		f := eventbus.Not(sub)
		return f, p.compiles(dkey, resolve(v), f)
	default: // sql
		src, ok := p.scalar(dkey, v)
		if !ok {
			return eventbus.Filter{}, false
		}
		f := eventbus.SQL(src)
		return f, p.compiles(dkey, resolve(v), f)
	}
}

// filterList parses the filters of the sequence n (at least one).
func (p *parser) filterList(key string, n *yaml.Node) ([]eventbus.Filter, bool) {
	if len(n.Content) == 0 {
		p.fail(p.at(n), key, fmt.Errorf("%w: an empty list of filters", eventbus.ErrInvalidFilter))
		return nil, false
	}
	subs := make([]eventbus.Filter, 0, len(n.Content))
	good := true
	for i, it := range n.Content {
		f, ok := p.filter(fmt.Sprintf("%s[%d]", key, i), it)
		good = good && ok
		subs = append(subs, f)
	}
	return subs, good
}

// pipeline parses a list of built-in steps into a Pipeline; nil when the
// list is empty or null.
func (p *parser) pipeline(key string, n *yaml.Node) (*eventbus.Pipeline, bool) {
	n, ok := p.expect(n, key, yaml.SequenceNode, "a list of steps")
	if !ok {
		return nil, n.Kind == yaml.ScalarNode && n.Tag == "!!null"
	}
	if len(n.Content) == 0 {
		return nil, true
	}
	steps := make([]eventbus.Step, 0, len(n.Content))
	good := true
	for i, sn := range n.Content {
		s, ok := p.step(fmt.Sprintf("%s[%d]", key, i), sn)
		good = good && ok
		steps = append(steps, s)
	}
	if !good {
		return nil, false
	}
	return eventbus.NewPipeline(steps...), true
}

func (p *parser) step(key string, n *yaml.Node) (eventbus.Step, bool) {
	k, v, ok := p.single(key, n, "a step", stepKinds)
	if !ok {
		return nil, false
	}
	skey := join(key, k.Value)
	switch k.Value {
	case "set_extension":
		var name, value string
		if !p.fields(skey, v, map[string]*string{"name": &name, "value": &value}) {
			return nil, false
		}
		if !p.extensionName(skey+".name", name) {
			return nil, false
		}
		return eventbus.SetExtension(name, value), true
	case "rename_extension":
		var from, to string
		if !p.fields(skey, v, map[string]*string{"from": &from, "to": &to}) {
			return nil, false
		}
		good := p.extensionName(skey+".from", from)
		good = p.extensionName(skey+".to", to) && good
		if good && from == to {
			p.fail(p.cfg.pos[skey+".to"], skey+".to", fmt.Errorf("renames %q to itself", from))
			good = false
		}
		return eventbus.RenameExtension(from, to), good
	case "redact_json":
		items := []*yaml.Node{resolve(v)}
		if items[0].Kind == yaml.SequenceNode {
			items = items[0].Content
		}
		if len(items) == 0 {
			p.fail(p.at(resolve(v)), skey, fmt.Errorf("%w: want a list of paths (card.number), got an empty list", ErrType))
			return nil, false
		}
		paths := make([]string, 0, len(items))
		good := true
		for i, it := range items {
			ikey := fmt.Sprintf("%s[%d]", skey, i)
			s, ok := p.scalar(ikey, it)
			if ok && (s == "" || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..")) {
				p.fail(p.at(resolve(it)), ikey, fmt.Errorf("path %q: want dot-separated field names (card.number)", s))
				ok = false
			}
			good = good && ok
			paths = append(paths, s)
		}
		return eventbus.RedactJSON(paths...), good
	default: // keep
		f, ok := p.filter(skey, v)
		if !ok {
			return nil, false
		}
		if f.IsZero() {
			p.fail(p.at(resolve(v)), skey, fmt.Errorf("%w: keep needs a filter", eventbus.ErrInvalidFilter))
			return nil, false
		}
		if !p.compiles(skey, resolve(v), f) {
			return nil, false
		}
		m, _ := eventbus.CompileFilter(f)
		return eventbus.Keep(m), true
	}
}

// fields parses the mapping n whose keys are all required strings.
func (p *parser) fields(key string, n *yaml.Node, dst map[string]*string) bool {
	fs := make(map[string]func(string, *yaml.Node), len(dst))
	for name, d := range dst {
		fs[name] = p.str(d)
	}
	before := len(p.problems)
	p.mapping(n, key, fs)
	good := len(p.problems) == before
	names := make([]string, 0, len(dst))
	for name := range dst {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if _, set := p.cfg.pos[join(key, name)]; !set {
			p.fail(p.at(resolve(n)), join(key, name), fmt.Errorf("missing: want %s", strings.Join(names, " and ")))
			good = false
		}
	}
	return good
}

func (p *parser) extensionName(key, name string) bool {
	if problem := driver.ExtensionNameProblem(name); problem != "" {
		p.fail(p.cfg.pos[key], key, fmt.Errorf("extension name %q: %s", name, problem))
		return false
	}
	return true
}

// schemaDecl is the schemas block as written; validate builds it.
type schemaDecl struct {
	fetch bool
	files []schemaFiles
	binds []schemaBind
}

type schemaFiles struct {
	key          string
	dir, baseURI string
}

type schemaBind struct {
	key, msgType, uri string
}

func (p *parser) schemas(key string, n *yaml.Node) {
	d := &schemaDecl{}
	p.schemaDecl = d
	p.mapping(n, key, map[string]func(string, *yaml.Node){
		"fetch": func(k string, v *yaml.Node) {
			s, ok := p.scalar(k, v)
			if !ok {
				return
			}
			b, err := strconv.ParseBool(s)
			if err != nil {
				p.fail(p.at(resolve(v)), k, fmt.Errorf("%w: %q is not a boolean (true or false)", ErrType, s))
			}
			d.fetch = b
		},
		"files": func(k string, v *yaml.Node) {
			if n := resolve(v); n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
				return
			}
			items := []*yaml.Node{resolve(v)}
			if items[0].Kind == yaml.SequenceNode {
				items = items[0].Content
			}
			for i, it := range items {
				fkey := k
				if resolve(v).Kind == yaml.SequenceNode {
					fkey = fmt.Sprintf("%s[%d]", k, i)
				}
				f := schemaFiles{key: fkey}
				if p.fields(fkey, it, map[string]*string{"dir": &f.dir, "base_uri": &f.baseURI}) {
					d.files = append(d.files, f)
				}
			}
		},
		"bind": func(k string, v *yaml.Node) {
			m, ok := p.expect(v, k, yaml.MappingNode, "a mapping of message types to schema URIs")
			if !ok {
				return
			}
			for i := 0; i+1 < len(m.Content); i += 2 {
				tn := m.Content[i]
				bkey := join(k, tn.Value)
				if _, dup := p.cfg.pos[bkey]; dup {
					p.fail(p.at(tn), bkey, errors.New("given twice"))
					continue
				}
				p.cfg.pos[bkey] = p.at(resolve(m.Content[i+1]))
				if uri, ok := p.scalar(bkey, m.Content[i+1]); ok {
					d.binds = append(d.binds, schemaBind{key: bkey, msgType: tn.Value, uri: uri})
				}
			}
		},
	})
}

// buildSchemas loads the declared schema files and binds the types, so that
// a missing file or schema is a problem of the configuration. A bound URI
// that no file holds is fetched now when fetch is true.
func (p *parser) buildSchemas() {
	d := p.schemaDecl
	if d == nil {
		return
	}
	s := eventbus.NewSchemas(&eventbus.SchemaOptions{Fetch: d.fetch})
	good := true
	for _, f := range d.files {
		dkey := f.key + ".dir"
		st, err := os.Stat(f.dir)
		switch {
		case err != nil:
			p.fail(p.cfg.pos[dkey], dkey, err)
		case !st.IsDir():
			p.fail(p.cfg.pos[dkey], dkey, fmt.Errorf("%s is not a directory", f.dir))
		default:
			err = s.AddFS(os.DirFS(f.dir), ".", f.baseURI)
			if err != nil {
				p.fail(p.cfg.pos[dkey], dkey, err)
			}
		}
		good = good && err == nil
	}
	if !good {
		return // bindings would fail for want of the files
	}
	for _, b := range d.binds {
		if err := s.Bind(b.msgType, b.uri); err != nil {
			if !d.fetch && (strings.HasPrefix(b.uri, "http://") || strings.HasPrefix(b.uri, "https://")) {
				err = fmt.Errorf("%w (no file under schemas.files holds it, and fetch is off)", err)
			}
			p.fail(p.cfg.pos[b.key], b.key, err)
		}
	}
	p.cfg.Schemas = s
}
