package middleware

import "strings"

// chainError is an error that a middleware adds to the error of the
// handler (or middleware) it wraps. Its message says "middleware: " once,
// however many of this package's middlewares the error went through:
// "middleware: 3 tries: handler timed out after 1s: ...", not "middleware:
// 3 tries: middleware: handler timed out ...". errors.Is and errors.As see
// every error it names.
type chainError struct {
	msg  string
	errs []error
}

func (e *chainError) Error() string   { return e.msg }
func (e *chainError) Unwrap() []error { return e.errs }

// inner is err's message as a part of a chainError's: without the
// package's prefix, which the chainError says.
func inner(err error) string { return strings.TrimPrefix(err.Error(), "middleware: ") }
