package testenv

import (
	"bytes"
	"fmt"
	"log/slog"
	"sync"
)

// Output gathers everything a test could leak a secret through: a logger's
// lines at every level (Logger) and the text of errors in every verb (Err).
// Safe for concurrent use; the zero value is ready.
type Output struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (o *Output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.Write(p)
}

// Logger returns a text logger at debug level that writes to o.
func (o *Output) Logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(o, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// Err records err, if not nil, as %v, %+v and %#v, after what.
func (o *Output) Err(what string, err error) {
	if err != nil {
		fmt.Fprintf(o, "%s: %v | %+v | %#v\n", what, err, err, err)
	}
}

// String returns everything gathered so far.
func (o *Output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// Printed returns v as every way a program may print or log it: fmt's
// verbs on the value and on a pointer to it, and slog's text and JSON
// handlers.
func Printed[T any](v T) []string {
	var text, json bytes.Buffer
	slog.New(slog.NewTextHandler(&text, nil)).Info("value", "value", v, "pointer", &v)
	slog.New(slog.NewJSONHandler(&json, nil)).Info("value", "value", v)
	return []string{fmt.Sprint(v), fmt.Sprintf("%v", &v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v), text.String(), json.String()}
}
