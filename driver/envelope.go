package driver

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// InvalidError reports a message refused before the wire because one of its
// attributes, extensions or headers cannot travel unchanged on every broker.
// It matches [ErrInvalid].
type InvalidError struct {
	// Field names what is wrong: "id", "extension \"Foo\"", "header \"X Bad\""...
	Field  string
	Reason string
}

func (e *InvalidError) Error() string { return "invalid message: " + e.Field + ": " + e.Reason }

// Is reports whether target is ErrInvalid.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// reservedNames are the CloudEvents attribute names and the extensions that
// Message carries in fields of their own (partitionkey is Message.Key on the
// brokers that carry the key as that extension): an entry in
// Message.Extensions must not shadow them.
var reservedNames = map[string]bool{
	"specversion": true, "id": true, "source": true, "type": true, "subject": true,
	"time": true, "datacontenttype": true, "dataschema": true, "data": true, "data_base64": true,
	ExtCorrelationID: true, ExtCausationID: true, ExtTraceParent: true, ExtTraceState: true,
	ExtReplyTo: true, ExtPartitionKey: true,
}

// CheckEnvelope validates the messages of a publish the same way for every
// driver, so that what one broker accepts every broker accepts, and what is
// accepted arrives unchanged. Every driver calls it in Publish, before the
// wire; the first problem is returned as an [*InvalidError]:
//
//   - Attribute and extension values are valid CloudEvents strings: UTF-8
//     without control characters (U+0000–U+001F, U+007F–U+009F), and without
//     leading or trailing white space (brokers whose headers are text, such as
//     NATS, trim it, and two distinct ids would arrive as one).
//   - Extension names follow the CloudEvents naming rule — lower-case ASCII
//     letters and digits, at most 20 characters — and do not shadow an
//     attribute or an extension that Message carries in a field of its own.
//   - Header names are tokens (RFC 9110: letters, digits and !#$%&'*+-.^_`|~)
//     that do not start with a CloudEvents prefix (ce- or ce_, any case);
//     header values carry no control characters but horizontal tab, and no
//     leading or trailing white space.
//   - The key carries no control characters.
func CheckEnvelope(msgs []*Message) error {
	for _, m := range msgs {
		if err := m.check(); err != nil {
			return err
		}
	}
	return nil
}

func (m *Message) check() error {
	// The fields one by one, not EachAttribute: this runs on every publish,
	// and the time attribute needs no check (the driver formats it).
	for _, a := range [...]struct{ name, value string }{
		{"id", m.ID}, {"source", m.Source}, {"type", m.Type}, {"subject", m.Subject},
		{"datacontenttype", m.DataContentType}, {"dataschema", m.DataSchema},
		{ExtCorrelationID, m.CorrelationID}, {ExtCausationID, m.CausationID},
		{ExtTraceParent, m.TraceParent}, {ExtTraceState, m.TraceState}, {ExtReplyTo, m.ReplyTo},
	} {
		if problem := attributeValueProblem(a.value); problem != "" {
			return &InvalidError{Field: a.name, Reason: problem}
		}
	}
	for name, value := range m.Extensions {
		if problem := ExtensionNameProblem(name); problem != "" {
			return &InvalidError{Field: "extension " + quote(name), Reason: problem}
		}
		if problem := attributeValueProblem(value); problem != "" {
			return &InvalidError{Field: "extension " + quote(name), Reason: problem}
		}
	}
	for name, vs := range m.Header {
		if problem := HeaderNameProblem(name); problem != "" {
			return &InvalidError{Field: "header " + quote(name), Reason: problem}
		}
		for _, v := range vs {
			if problem := headerValueProblem(v); problem != "" {
				return &InvalidError{Field: "header " + quote(name), Reason: problem}
			}
		}
	}
	if i := strings.IndexFunc(m.Key, isControl); i >= 0 {
		return &InvalidError{Field: "key", Reason: fmt.Sprintf("control character %U", []rune(m.Key[i:])[0])}
	}
	return nil
}

// ExtensionNameProblem says why name cannot be a CloudEvents extension name,
// or returns "" when it can.
func ExtensionNameProblem(name string) string {
	switch {
	case name == "":
		return "empty name"
	case len(name) > 20:
		return "longer than 20 characters"
	case reservedNames[name]:
		return "shadows a CloudEvents attribute or a Message field"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return "only lower-case ASCII letters and digits are allowed"
		}
	}
	return ""
}

// HeaderNameProblem says why name cannot be a free header name, or returns ""
// when it can.
func HeaderNameProblem(name string) string {
	if name == "" {
		return "empty name"
	}
	if len(name) >= 3 && (strings.EqualFold(name[:3], "ce-") || strings.EqualFold(name[:3], "ce_")) {
		return "the ce- and ce_ prefixes are reserved for CloudEvents attributes"
	}
	for i := 0; i < len(name); i++ {
		if !isTokenChar(name[i]) {
			return fmt.Sprintf("character %q is not allowed in a header name", name[i])
		}
	}
	return ""
}

func attributeValueProblem(v string) string { return textProblem(v, false) }

func headerValueProblem(v string) string { return textProblem(v, true) }

const problemSpace = "leading or trailing white space"

// textProblem says what makes v unfit to travel unchanged as an attribute or
// header value: invalid UTF-8, a control character (a tab is allowed in a
// header), or surrounding white space. One pass, without allocating.
func textProblem(v string, tabOK bool) string {
	for i := 0; i < len(v); {
		c := v[i]
		if c < utf8.RuneSelf {
			if (c < 0x20 && !(tabOK && c == '\t')) || c == 0x7f {
				return fmt.Sprintf("control character %U", rune(c))
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		if r == utf8.RuneError && size == 1 {
			return "not valid UTF-8"
		}
		if r >= 0x80 && r <= 0x9f {
			return fmt.Sprintf("control character %U", r)
		}
		i += size
	}
	if v != "" && (spaceAtStart(v) || spaceAtEnd(v)) {
		return problemSpace
	}
	return ""
}

// spaceAtStart and spaceAtEnd report white space at either end of v, once
// textProblem has seen that v holds no control character but a tab: for
// ASCII, a space or a tab.
func spaceAtStart(v string) bool {
	if c := v[0]; c < utf8.RuneSelf {
		return c == ' ' || c == '\t'
	}
	r, _ := utf8.DecodeRuneInString(v)
	return unicode.IsSpace(r)
}

func spaceAtEnd(v string) bool {
	if c := v[len(v)-1]; c < utf8.RuneSelf {
		return c == ' ' || c == '\t'
	}
	r, _ := utf8.DecodeLastRuneInString(v)
	return unicode.IsSpace(r)
}

func isControl(r rune) bool { return r < 0x20 || (r >= 0x7f && r <= 0x9f) }

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
