package eventbus

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// ErrSchema: a message's data does not satisfy its JSON Schema, or the
// schema could not be loaded. errors.As with *SchemaError gives the
// violations.
var ErrSchema = errors.New("schema validation failed")

// SchemaError reports a message checked against a JSON Schema. It matches
// ErrSchema. Violations lists what the data breaks ("/amount: must be >= 1")
// when the data was checked; it is empty when the schema itself could not
// be loaded (Err says why).
type SchemaError struct {
	Schema     string
	Type       string
	Violations []string
	Err        error
}

func (e *SchemaError) Error() string {
	if len(e.Violations) > 0 {
		return fmt.Sprintf("%s data violates schema %s: %s", e.Type, e.Schema, strings.Join(e.Violations, "; "))
	}
	return fmt.Sprintf("%s schema %s: %v", e.Type, e.Schema, e.Err)
}

// Unwrap returns the load error, if any.
func (e *SchemaError) Unwrap() error { return e.Err }

// Is makes a SchemaError match ErrSchema.
func (e *SchemaError) Is(target error) bool { return target == ErrSchema }

// SchemaOptions configures Schemas. The zero value is valid.
type SchemaOptions struct {
	// Fetch resolves http and https schema URIs that were not added, over
	// HTTP, once each: a fetched schema is kept for the life of the
	// Schemas. Off by default: a consumer then checks only the schemas its
	// own code added, whatever URI a producer writes in dataschema.
	Fetch bool
	// HTTPClient fetches schemas. Default: a client with a 10s timeout.
	HTTPClient *http.Client
}

// Schemas holds JSON Schemas (draft 2020-12 unless a schema's $schema says
// otherwise) and checks messages against them. Set Options.Schemas to have
// the bus check every message it publishes (a *SchemaError before the wire)
// and every message it consumes (an invalid one is dead-lettered with the
// violations as the reason; one whose schema cannot be loaded is retried).
//
// Which schema a message is checked against: the one its dataschema
// attribute names, if that schema was added or can be fetched; otherwise
// the one bound to its type with Bind, if any; otherwise none. On publish,
// a message of a bound type without dataschema gets the bound URI. Data is
// checked when datacontenttype is absent or a JSON type; other data
// violates a schema.
//
// Schemas is safe for concurrent use.
type Schemas struct {
	opts SchemaOptions

	mu       sync.Mutex // guards compiler and the maps
	compiler *jsonschema.Compiler
	added    map[string]bool
	compiled map[string]*jsonschema.Schema
	byType   map[string]string
}

// NewSchemas returns an empty set of schemas configured by opts (nil means
// defaults).
func NewSchemas(opts *SchemaOptions) *Schemas {
	var o SchemaOptions
	if opts != nil {
		o = *opts
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	s := &Schemas{
		opts:     o,
		compiler: jsonschema.NewCompiler(),
		added:    map[string]bool{},
		compiled: map[string]*jsonschema.Schema{},
		byType:   map[string]string{},
	}
	s.compiler.DefaultDraft(jsonschema.Draft2020)
	loader := jsonschema.SchemeURLLoader{}
	if o.Fetch {
		hl := httpLoader{client: o.HTTPClient}
		loader["http"], loader["https"] = hl, hl
	}
	s.compiler.UseLoader(loader)
	return s
}

// Add adds the schema document under uri (and under its $id, if it has
// one). It fails if the document is not JSON.
func (s *Schemas) Add(uri string, schema []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema))
	if err != nil {
		return fmt.Errorf("eventbus: schema %s: %w", uri, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.compiler.AddResource(uri, doc); err != nil {
		return fmt.Errorf("eventbus: schema %s: %w", uri, err)
	}
	s.added[uri] = true
	if obj, ok := doc.(map[string]any); ok {
		if id, ok := obj["$id"].(string); ok && id != "" && id != uri {
			s.added[id] = true
		}
	}
	return nil
}

// AddFS adds every *.json file under dir of fsys (an embed.FS, os.DirFS...)
// under baseURI joined with the file's path relative to dir
// ("https://schemas.example.com/" + "order/created.json"), and under its
// $id.
func (s *Schemas) AddFS(fsys fs.FS, dir, baseURI string) error {
	return fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".json" {
			return err
		}
		data, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(strings.TrimPrefix(p, dir), "/")
		return s.Add(strings.TrimSuffix(baseURI, "/")+"/"+rel, data)
	})
}

// Bind makes uri the schema of messages of type msgType. It loads and
// compiles the schema now, so that an unknown or malformed schema fails
// here rather than at the first message.
func (s *Schemas) Bind(msgType, uri string) error {
	if _, err := s.schema(uri); err != nil {
		return fmt.Errorf("eventbus: %w", &SchemaError{Schema: uri, Type: msgType, Err: err})
	}
	s.mu.Lock()
	s.byType[msgType] = uri
	s.mu.Unlock()
	return nil
}

// Validate checks m against its schema (see Schemas for which) and returns
// nil when it has none or satisfies it, else an error that unwraps to a
// *SchemaError (errors.As).
func (s *Schemas) Validate(m *Message) error {
	if err := s.validate(m, false); err != nil {
		return fmt.Errorf("eventbus: %w", err)
	}
	return nil
}

// validate checks m; on publish it sets the bound schema's URI as m's
// dataschema when m has none.
func (s *Schemas) validate(m *Message, publish bool) error {
	uri := m.DataSchema
	s.mu.Lock()
	known := uri != "" && (s.added[uri] || s.compiled[uri] != nil || (s.opts.Fetch && fetchable(uri)))
	bound := s.byType[m.Type]
	s.mu.Unlock()
	if !known {
		if uri = bound; uri == "" {
			return nil
		}
		if publish && m.DataSchema == "" {
			m.DataSchema = uri
		}
	}
	sch, err := s.schema(uri)
	if err != nil {
		return &SchemaError{Schema: uri, Type: m.Type, Err: err}
	}
	if ct := mediaType(m.DataContentType); ct != "" && !strings.HasSuffix(ct, "json") {
		return &SchemaError{Schema: uri, Type: m.Type, Violations: []string{fmt.Sprintf("datacontenttype %q is not JSON", m.DataContentType)}}
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(m.Data))
	if err != nil {
		return &SchemaError{Schema: uri, Type: m.Type, Violations: []string{"data is not JSON: " + err.Error()}}
	}
	err = sch.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return &SchemaError{Schema: uri, Type: m.Type, Violations: []string{err.Error()}}
	}
	return &SchemaError{Schema: uri, Type: m.Type, Violations: violations(ve)}
}

func fetchable(uri string) bool {
	return strings.HasPrefix(uri, "http://") || strings.HasPrefix(uri, "https://")
}

// schema returns the compiled schema of uri, compiling (and fetching) it
// the first time.
func (s *Schemas) schema(uri string) (*jsonschema.Schema, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sch := s.compiled[uri]; sch != nil {
		return sch, nil
	}
	sch, err := s.compiler.Compile(uri)
	if err != nil {
		return nil, err
	}
	s.compiled[uri] = sch
	return sch, nil
}

// violations lists the leaf errors of ve as "<instance location>: <error>".
func violations(ve *jsonschema.ValidationError) []string {
	var out []string
	var walk func(u jsonschema.OutputUnit)
	walk = func(u jsonschema.OutputUnit) {
		if u.Error != nil && len(u.Errors) == 0 {
			loc := u.InstanceLocation
			if loc == "" {
				loc = "/"
			}
			out = append(out, loc+": "+u.Error.String())
		}
		for _, c := range u.Errors {
			walk(c)
		}
	}
	walk(*ve.BasicOutput())
	if len(out) == 0 {
		out = append(out, ve.Error())
	}
	return out
}

type httpLoader struct{ client *http.Client }

func (l httpLoader) Load(url string) (any, error) {
	resp, err := l.client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch %s: %s", url, resp.Status)
	}
	return jsonschema.UnmarshalJSON(io.LimitReader(resp.Body, 4<<20))
}
