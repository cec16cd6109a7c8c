package rabbitbus

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver/drivertest"
)

// fuzzValue turns a fuzzed header value into an AMQP field value: its first
// byte picks the type (s string, b bytes, t bool, i integer, d timestamp in
// Unix seconds, a array of strings separated by commas, f a float, which no
// binding maps), the rest is the value.
func fuzzValue(v string) any {
	if v == "" {
		return ""
	}
	rest := v[1:]
	switch v[0] {
	case 'b':
		return []byte(rest)
	case 't':
		return rest == "true"
	case 'i':
		n, _ := strconv.ParseInt(rest, 10, 64)
		return n
	case 'd':
		n, _ := strconv.ParseInt(rest, 10, 64)
		return time.Unix(n, 0)
	case 'a':
		var arr []any
		for s := range strings.SplitSeq(rest, ",") {
			arr = append(arr, s)
		}
		return arr
	case 'f':
		f, _ := strconv.ParseFloat(rest, 64)
		return f
	}
	return rest
}

// fuzzText is the fuzzed form of an AMQP header value, for seeds.
func fuzzText(v any) string {
	switch v := v.(type) {
	case string:
		return "s" + v
	case []any:
		parts := make([]string, len(v))
		for i, e := range v {
			parts[i] = fmt.Sprint(e)
		}
		return "a" + strings.Join(parts, ",")
	}
	return "s" + fmt.Sprint(v)
}

// FuzzDecode: any delivery — content type, application properties of any
// type, body — decodes without panic into a message and an error matching
// ErrMalformed, or into a valid envelope that encodes and decodes again
// unchanged.
func FuzzDecode(f *testing.F) {
	for _, m := range drivertest.FuzzSeeds() {
		p := encode(m, true)
		h := map[string][]string{}
		for k, v := range p.Headers {
			h[k] = []string{fuzzText(v)}
		}
		f.Add(p.ContentType, drivertest.FuzzHeaderText(h), p.Body)
	}
	f.Fuzz(func(t *testing.T, contentType, headers string, body []byte) {
		d := &amqp.Delivery{ContentType: contentType, Headers: amqp.Table{}, Body: body}
		for _, kv := range drivertest.FuzzHeaders(headers) {
			d.Headers[kv[0]] = fuzzValue(kv[1])
		}
		m, err := decode(d)
		drivertest.CheckDecoded(t, m, err)
		if err != nil || !drivertest.Reencodable(m) {
			return
		}
		p := encode(m, true)
		again, err := decode(&amqp.Delivery{ContentType: p.ContentType, Headers: p.Headers, Body: p.Body})
		drivertest.CheckRedecoded(t, m, again, err)
	})
}
