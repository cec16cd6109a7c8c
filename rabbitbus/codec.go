package rabbitbus

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/marty-msf/eventbus/driver"
)

// The CloudEvents AMQP protocol binding, binary content mode, on AMQP 0-9-1:
// every attribute but datacontenttype is an application property (an AMQP
// 0-9-1 header) named "cloudEvents:" + its name, with its canonical string
// value; datacontenttype is the content-type property; the body is the data.
// The binding's newer revisions prefer "cloudEvents_" (the JMS-safe form):
// both are read.
const (
	cePrefix      = "cloudEvents:"
	ceAltPrefix   = "cloudEvents_"
	structuredCT  = "application/cloudevents+json"
	attemptHeader = "x-eventbus-attempt" // deliveries before this copy, when the driver republished it
	seqHeader     = "x-eventbus-seq"     // publish sequence of a mandatory message, to match a return
)

// brokerHeaders are set by RabbitMQ or by the driver itself: they never
// reach a received Message's Header.
var brokerHeaders = map[string]bool{
	attemptHeader: true, seqHeader: true, delayHeader: true, refHeader: true,
	"x-death": true, "x-delivery-count": true,
	"x-first-death-exchange": true, "x-first-death-queue": true, "x-first-death-reason": true,
	"x-last-death-exchange": true, "x-last-death-queue": true, "x-last-death-reason": true,
}

// ceName returns the application property name of a CloudEvents attribute,
// without allocating for the attributes every message carries.
func ceName(name string) string {
	switch name {
	case "specversion":
		return "cloudEvents:specversion"
	case "id":
		return "cloudEvents:id"
	case "source":
		return "cloudEvents:source"
	case "type":
		return "cloudEvents:type"
	case "time":
		return "cloudEvents:time"
	}
	return cePrefix + name
}

// encode maps m onto an AMQP publishing in the content mode m.Mode asks for.
// The caller has checked m with driver.CheckEnvelope. The publishing shares
// m's body: amqp091 writes it to the socket before Publish returns.
func encode(m *driver.Message, persistent bool) amqp.Publishing {
	p := amqp.Publishing{MessageId: m.ID, Body: m.Data}
	if persistent {
		p.DeliveryMode = amqp.Persistent
	}
	h := make(amqp.Table, len(m.Header)+len(m.Extensions)+6) // a map of up to 8 entries is one block
	for k, vs := range m.Header {
		if len(vs) == 1 {
			h[k] = vs[0]
			continue
		}
		arr := make([]any, len(vs))
		for i, v := range vs {
			arr[i] = v
		}
		h[k] = arr
	}
	if m.Mode == driver.Structured {
		// The attributes travel as application properties too (the binding
		// allows it; the body wins on receipt), so that headers bindings
		// select structured messages as they do binary ones.
		p.ContentType = structuredCT
		p.Body = driver.EncodeStructured(m)
	} else {
		p.ContentType = m.DataContentType
	}
	if m.Key != "" {
		h[cePrefix+driver.ExtPartitionKey] = m.Key
	}
	m.EachAttribute(func(name, value string) {
		if name == "datacontenttype" {
			return
		}
		n := ceName(name)
		if _, taken := h[n]; !taken {
			h[n] = value
		}
	})
	p.Headers = h
	return p
}

// decode reads a delivery in either content mode, whatever the sender: a
// structured event when content-type is application/cloudevents (any
// suffix), binary mode when a cloudEvents:specversion (or
// cloudEvents_specversion) property is present. Anything else is a
// *driver.MalformedError with the raw body as Data.
func decode(d *amqp.Delivery) (*driver.Message, error) {
	return decodeInto(d, new(driver.Message))
}

// decodeInto is decode that fills m, a zero Message, for a binary-mode
// event (a structured one is a new Message).
func decodeInto(d *amqp.Delivery, m *driver.Message) (*driver.Message, error) {
	if driver.IsStructured(d.ContentType) {
		return decodeStructured(d.Headers, d.Body)
	}
	m.Data = d.Body
	prefix := ""
	switch {
	case d.Headers[cePrefix+"specversion"] != nil:
		prefix = cePrefix
	case d.Headers[ceAltPrefix+"specversion"] != nil:
		prefix = ceAltPrefix
	}
	var err error
	for k, v := range d.Headers {
		if brokerHeaders[k] {
			continue
		}
		if prefix != "" && strings.HasPrefix(k, prefix) {
			name := k[len(prefix):]
			s, ok := attrString(v)
			if !ok {
				if err == nil {
					err = &driver.MalformedError{Reason: fmt.Sprintf("application property %q has a value of type %T", k, v)}
				}
				continue
			}
			if name == driver.ExtPartitionKey {
				m.Key = s
				continue
			}
			if e := m.SetAttribute(name, s); e != nil && err == nil {
				err = e
			}
			continue
		}
		vs, ok := headerValues(v)
		if !ok {
			continue // a broker or client property that is not a header of ours
		}
		if m.Header == nil {
			m.Header = make(map[string][]string, len(d.Headers))
		}
		m.Header[k] = vs
	}
	if prefix == "" {
		return m, &driver.MalformedError{Reason: "neither a cloudEvents:specversion application property nor a structured content type"}
	}
	if m.DataContentType == "" {
		m.DataContentType = d.ContentType
	}
	if err != nil {
		return m, err
	}
	return m, m.Validate()
}

// attrString is the canonical string of an application property value: the
// binding allows native AMQP types as well as strings.
func attrString(v any) (string, bool) {
	switch v := v.(type) {
	case string:
		return v, true
	case []byte:
		return base64.StdEncoding.EncodeToString(v), true
	case bool:
		return strconv.FormatBool(v), true
	case int8, int16, int32, int64, int, uint8, uint16, uint32, uint64:
		return fmt.Sprint(v), true
	case time.Time:
		return v.UTC().Format(time.RFC3339Nano), true
	}
	return "", false
}

func headerValues(v any) ([]string, bool) {
	if arr, ok := v.([]any); ok {
		vs := make([]string, 0, len(arr))
		for _, e := range arr {
			s, ok := attrString(e)
			if !ok {
				return nil, false
			}
			vs = append(vs, s)
		}
		return vs, true
	}
	s, ok := attrString(v)
	if !ok {
		return nil, false
	}
	return []string{s}, true
}

// decodeStructured reads an event in the JSON event format. Headers other
// than the driver's and the broker's are the message's free headers.
func decodeStructured(headers amqp.Table, body []byte) (*driver.Message, error) {
	m, err := driver.DecodeStructured(body)
	for k, v := range headers {
		if brokerHeaders[k] || strings.HasPrefix(k, cePrefix) || strings.HasPrefix(k, ceAltPrefix) {
			continue // the binding allows attributes as properties too; the body wins
		}
		if vs, ok := headerValues(v); ok {
			if m.Header == nil {
				m.Header = make(map[string][]string, len(headers))
			}
			m.Header[k] = vs
		}
	}
	return m, err
}
