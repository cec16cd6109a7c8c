package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// noticeHandler shows the drivers' connection events (a lost connection,
// a reconnection, a failing consumer) to the person at the terminal, one
// short line each on standard error, so that a listen that has gone quiet
// says why. Routine information stays hidden.
type noticeHandler struct {
	mu    *sync.Mutex
	w     io.Writer
	attrs []slog.Attr
}

// logger returns the logger of the tool's drivers: notices on stderr.
func (cf *connFlags) logger() *slog.Logger {
	if cf.stderr == nil {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(&noticeHandler{mu: new(sync.Mutex), w: cf.stderr})
}

func (h *noticeHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *noticeHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn && !strings.Contains(r.Message, "reconnected") {
		return nil
	}
	var b strings.Builder
	b.WriteString(r.Time.Format(time.TimeOnly))
	b.WriteByte(' ')
	b.WriteString(r.Message)
	add := func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value.Resolve())
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	if strings.HasSuffix(r.Message, ": disconnected") {
		b.WriteString(" (reconnecting until the server is back)")
	}
	b.WriteByte('\n')
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, b.String())
	return err
}

func (h *noticeHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &noticeHandler{mu: h.mu, w: h.w, attrs: append(append([]slog.Attr(nil), h.attrs...), attrs...)}
}

func (h *noticeHandler) WithGroup(string) slog.Handler { return h }
