package driver_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

func TestCheckEnvelope(t *testing.T) {
	valid := func() *driver.Message {
		return &driver.Message{ID: "order-1", Source: "/orders", Type: "order.placed", Subject: "Zürich ✓",
			Key: "k 1", Extensions: map[string]string{"tenant": "acme, ünïcode"},
			Header: map[string][]string{"X-Trace": {"a\tb"}}}
	}
	if err := driver.CheckEnvelope([]*driver.Message{valid()}); err != nil {
		t.Fatalf("valid message refused: %v", err)
	}
	for name, c := range map[string]struct {
		edit  func(m *driver.Message)
		field string
	}{
		"id with trailing space":    {func(m *driver.Message) { m.ID = "order-1 " }, "id"},
		"id with a line break":      {func(m *driver.Message) { m.ID = "a\nb" }, "id"},
		"id with a C1 control":      {func(m *driver.Message) { m.ID = "a\u0085b" }, "id"},
		"subject with leading nbsp": {func(m *driver.Message) { m.Subject = "\u00a0x" }, "subject"},
		"type not UTF-8":            {func(m *driver.Message) { m.Type = "a\xffb" }, "type"},
		"extension value with CR":   {func(m *driver.Message) { m.Extensions["tenant"] = "a\rb" }, `extension "tenant"`},
		"extension name upper case": {func(m *driver.Message) { m.Extensions["Tenant"] = "x" }, `extension "Tenant"`},
		"extension name too long":   {func(m *driver.Message) { m.Extensions[strings.Repeat("a", 21)] = "x" }, "extension"},
		"extension shadows id":      {func(m *driver.Message) { m.Extensions["id"] = "x" }, `extension "id"`},
		"extension partitionkey":    {func(m *driver.Message) { m.Extensions["partitionkey"] = "x" }, `extension "partitionkey"`},
		"header name with a space":  {func(m *driver.Message) { m.Header["X Bad"] = []string{"1"} }, `header "X Bad"`},
		"header with ce- prefix":    {func(m *driver.Message) { m.Header["Ce-Id"] = []string{"1"} }, `header "Ce-Id"`},
		"header value with newline": {func(m *driver.Message) { m.Header["X-Trace"] = []string{"a\nb"} }, `header "X-Trace"`},
		"header value padded":       {func(m *driver.Message) { m.Header["X-Trace"] = []string{" a"} }, `header "X-Trace"`},
		"key with a control":        {func(m *driver.Message) { m.Key = "k\x00" }, "key"},
	} {
		m := valid()
		c.edit(m)
		err := driver.CheckEnvelope([]*driver.Message{valid(), m})
		var ie *driver.InvalidError
		if !errors.Is(err, driver.ErrInvalid) || !errors.As(err, &ie) || !strings.HasPrefix(ie.Field, c.field) {
			t.Errorf("%s: %v, want an InvalidError on %s", name, err, c.field)
		}
	}
}

func BenchmarkCheckEnvelope(b *testing.B) {
	m := []*driver.Message{{ID: "0123456789abcdef-42", Source: "orders", Type: "order.placed", DataContentType: "application/json",
		CorrelationID: "c-1", Extensions: map[string]string{"tenant": "acme"}}}
	b.ReportAllocs()
	for b.Loop() {
		if err := driver.CheckEnvelope(m); err != nil {
			b.Fatal(err)
		}
	}
}
