package driver

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// URLQuery writes the query of a URL that [Params] reads back: the reverse of
// Params, for a driver's (*Config).URL method. Each typed method sets a
// parameter only when its value is not the zero value, which stands for the
// default and needs no parameter. The zero URLQuery is ready to use.
type URLQuery struct{ values url.Values }

// Set sets name to v, even when v is empty.
func (q *URLQuery) Set(name, v string) {
	if q.values == nil {
		q.values = url.Values{}
	}
	q.values.Set(name, v)
}

// Encode returns the query, sorted by name, without the leading "?".
func (q *URLQuery) Encode() string { return q.values.Encode() }

// String sets name to v, unless v is empty.
func (q *URLQuery) String(name, v string) {
	if v != "" {
		q.Set(name, v)
	}
}

// Strings sets name to vs joined by commas, unless vs is empty. [Params.Strings]
// splits them again.
func (q *URLQuery) Strings(name string, vs []string) {
	if len(vs) > 0 {
		q.Set(name, strings.Join(vs, ","))
	}
}

// Bool sets name to true when v is; false is the default and is left out.
func (q *URLQuery) Bool(name string, v bool) {
	if v {
		q.Set(name, "true")
	}
}

// BoolPtr sets name to *v, true or false, unless v is nil: the reverse of
// [Params.BoolPtr].
func (q *URLQuery) BoolPtr(name string, v *bool) {
	if v != nil {
		q.Set(name, strconv.FormatBool(*v))
	}
}

// Int sets name to v in decimal, unless v is zero.
func (q *URLQuery) Int(name string, v int) { q.Int64(name, int64(v)) }

// Int32 sets name to v in decimal, unless v is zero.
func (q *URLQuery) Int32(name string, v int32) { q.Int64(name, int64(v)) }

// Int64 sets name to v in decimal, unless v is zero.
func (q *URLQuery) Int64(name string, v int64) {
	if v != 0 {
		q.Set(name, strconv.FormatInt(v, 10))
	}
}

// Duration sets name to v as a Go duration (1m30s), unless v is zero.
func (q *URLQuery) Duration(name string, v time.Duration) {
	if v != 0 {
		q.Set(name, v.String())
	}
}
