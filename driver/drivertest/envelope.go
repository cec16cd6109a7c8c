package drivertest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/driver"
)

// testEnvelope checks that the driver refuses what driver.CheckEnvelope
// refuses, before the wire, and carries what it accepts unchanged.
func (s *suite) testEnvelope(t *testing.T) {
	t.Run("DistinctIDs", s.testDistinctIDs)
	t.Run("ExtensionNames", s.testExtensionNames)
	t.Run("HeaderNames", s.testHeaderNames)
}

// refusal is a message that Publish must refuse with ErrInvalid.
type refusal struct {
	what string
	m    *driver.Message
}

// expectRefused publishes each refusal alone and in a batch after a valid
// message; every publish must fail with a *driver.InvalidError before the
// wire. It then publishes want, one at a time, followed by a marker, and
// checks that sub receives exactly those, in that order: nothing of a
// refused batch arrived.
func (s *suite) expectRefused(t *testing.T, dst driver.Destination, sub driver.Subscription, refused []refusal, want ...*driver.Message) {
	t.Helper()
	pub := s.open(t)
	for _, r := range refused {
		for _, batch := range [][]*driver.Message{{r.m.Clone()}, {newMessage("valid-before-" + unique()), r.m.Clone()}} {
			err := pub.Publish(timeout(t, opTimeout), dst, batch)
			var inv *driver.InvalidError
			switch {
			case !errors.Is(err, driver.ErrInvalid):
				t.Errorf("Publish of a batch of %d with %s: %v, want an error matching driver.ErrInvalid", len(batch), r.what, err)
			case !errors.As(err, &inv):
				t.Errorf("Publish error for %s (%v) is not a *driver.InvalidError", r.what, err)
			}
		}
	}
	marker := newMessage("envelope-marker")
	for _, m := range append(want, marker) {
		publish(t, pub, dst, m.Clone())
	}
	got := receiveAndAck(t, sub, len(want)+1, 1)
	for i, d := range got {
		if i < len(want) {
			checkMessage(t, want[i], d.Message)
		} else if d.Message.ID != marker.ID {
			t.Errorf("received %q where the marker published after the refused messages was expected", d.Message.ID)
		}
	}
	expectNone(t, sub, quietWindow, "every other message was refused")
}

// testDistinctIDs checks ids that differ from a valid one only by surrounding
// white space or line breaks: brokers with text headers would trim them and
// deliver two distinct ids as one, so every driver refuses them.
func (s *suite) testDistinctIDs(t *testing.T) {
	dst := dest(s.anyPattern(t), "distinctids")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	id := "order-1-" + unique()
	var refused []refusal
	for _, variant := range []string{" " + id, id + " ", id + "\r\n", "\r\n" + id, id + "\n", "\t" + id, id + "\u00a0"} {
		refused = append(refused, refusal{fmt.Sprintf("id %q", variant), messageWithID(variant)})
	}
	s.expectRefused(t, dst, sub, refused, messageWithID(id))
}

// testExtensionNames checks the CloudEvents naming rule for extensions and
// exact values for the valid ones.
func (s *suite) testExtensionNames(t *testing.T) {
	dst := dest(s.anyPattern(t), "extnames")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	withExt := func(name, value string) *driver.Message {
		m := newMessage("ext")
		m.Extensions = map[string]string{"tenant": "acme", name: value}
		return m
	}
	var refused []refusal
	for _, name := range []string{
		"has space", "has:colon", "crlf\r\n", "line\nbreak", "Upper", "tenantID", "abcdefghijklmnopqrstu",
		"id", "source", "type", "time", "correlationid", "traceparent", "replyto", "", "dash-ed", "under_score", "café",
	} {
		refused = append(refused, refusal{fmt.Sprintf("extension name %q", name), withExt(name, "v")})
	}
	for _, value := range []string{"line1\r\nline2", "bell\a", " padded", "padded "} {
		refused = append(refused, refusal{fmt.Sprintf("extension value %q", value), withExt("note", value)})
	}

	valid := newMessage("ext-valid")
	valid.Extensions = map[string]string{
		"tenant":               "Café ☕ — 東京 — Ünïcödé",
		"abcdefghijklmnopqrst": "twenty characters",
		"x1":                   "with  inner   spaces, commas; colons: and = signs",
		"emoji":                "🚀",
		"quote":                `"quoted" \back\slash`,
	}
	s.expectRefused(t, dst, sub, refused, valid)
}

// testHeaderNames checks that free header names are tokens and do not take
// the CloudEvents prefixes.
func (s *suite) testHeaderNames(t *testing.T) {
	dst := dest(s.anyPattern(t), "headernames")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	var refused []refusal
	for _, name := range []string{"X Bad", " X-Lead", "X-Trail ", "X:Colon", "X-CR\r\n", "ce-id", "CE_type", "Ce-Custom", ""} {
		m := newMessage("header")
		m.Header = map[string][]string{"X-Good": {"1"}, name: {"v"}}
		refused = append(refused, refusal{fmt.Sprintf("header name %q", name), m})
	}
	for _, value := range []string{"line1\r\nline2", " padded", "padded "} {
		m := newMessage("header")
		m.Header = map[string][]string{"X-Value": {value}}
		refused = append(refused, refusal{fmt.Sprintf("header value %q", value), m})
	}
	valid := newMessage("header-valid")
	valid.Header = map[string][]string{
		"X-Token!#$%&'*+.^_`|~": {"all token characters"},
		"X-Tab":                 {"inner\ttab"},
		"X-Unicode":             {"Ünïcödé ☕"},
		"cex-not-a-prefix":      {"ok"},
	}
	s.expectRefused(t, dst, sub, refused, valid)
}

// testContentMode checks that a message published in structured content mode
// arrives with its whole envelope, and with the mode it travelled in.
func (s *suite) testContentMode(t *testing.T) {
	dst := dest(s.anyPattern(t), "contentmode")
	sub := subscribe(t, s.open(t), dst, driver.SubscribeOptions{Group: s.group()})
	full := func(id string) *driver.Message {
		return &driver.Message{
			ID:              id + "-" + unique(),
			Source:          "https://example.com/drivertest/structured",
			Type:            "com.example.drivertest.structured",
			Subject:         "orders/42",
			Time:            time.Date(2026, 3, 14, 15, 9, 26, 535000000, time.UTC),
			DataContentType: "application/json",
			DataSchema:      "https://example.com/schemas/structured/v1",
			CorrelationID:   "corr-7f1c",
			CausationID:     "cause-9d2e",
			TraceParent:     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
			TraceState:      "congo=t61rcWkgMzE",
			ReplyTo:         "replies.drivertest.instance-1",
			Extensions:      map[string]string{"tenant": "acme", "note": "Café ☕"},
			Key:             "customer-42",
			Header:          map[string][]string{"X-Multi": {"one", "two"}},
			Data:            []byte(`{"order":42,"items":["a","b"],"note":"Café ☕"}`),
			Mode:            driver.Structured,
		}
	}
	jsonData := full("structured-json")
	binaryData := full("structured-binary")
	binaryData.DataContentType = "application/octet-stream"
	binaryData.Data = []byte{0x00, 0xff, 0xfe, 0x80, '\r', '\n', '"', '{'}
	noData := full("structured-nodata")
	noData.DataContentType = ""
	noData.Data = nil
	binaryMode := full("binary-mode")
	binaryMode.Mode = driver.Binary
	msgs := []*driver.Message{jsonData, binaryData, noData, binaryMode}
	pub := s.open(t)
	for _, m := range msgs {
		publish(t, pub, dst, m.Clone())
	}

	got := receiveAndAck(t, sub, len(msgs), 10)
	checkExactlyOnce(t, "the subscriber", msgs, got)
	for _, d := range got {
		sent := msgByID(msgs, d.Message.ID)
		want := sent.Mode
		if s.h.BinaryModeOnly {
			want = driver.Binary
		}
		if d.Message.Mode != want {
			t.Errorf("message %q published with Mode %s arrived with Mode %s, want %s (Harness.BinaryModeOnly: %v)",
				d.Message.ID, modeName(sent.Mode), modeName(d.Message.Mode), modeName(want), s.h.BinaryModeOnly)
		}
	}
	expectNone(t, sub, quietWindow, "every message was received and acked")
}

func modeName(m driver.ContentMode) string {
	switch m {
	case driver.Binary:
		return "Binary"
	case driver.Structured:
		return "Structured"
	}
	return fmt.Sprintf("ContentMode(%d)", m)
}
