package natsbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
)

// StreamConflictError reports an existing stream whose configuration
// differs from Config in a way an update cannot change.
type StreamConflictError struct {
	Stream string
	Diffs  []StreamDiff
}

// StreamDiff is one differing field of a stream.
type StreamDiff struct {
	Field                string
	Existing, Configured string
}

func (e *StreamConflictError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "stream %s exists with a conflicting configuration:", e.Stream)
	for i, d := range e.Diffs {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, " %s is %s, configured %s", d.Field, d.Existing, d.Configured)
	}
	b.WriteString(" (change Config.Streams or Config.StreamPrefix, or delete the stream)")
	return b.String()
}

// errCodeSubjectOverlap is the server's code for a stream whose subjects
// another stream already stores.
const errCodeSubjectOverlap jetstream.ErrorCode = 10065

// streamConfig is the configuration Options asks for pattern p's stream.
func (d *Driver) streamConfig(p driver.Pattern) jetstream.StreamConfig {
	s := d.opts.Streams
	cfg := jetstream.StreamConfig{
		Name:              streamName(d.opts.StreamPrefix, p),
		Subjects:          []string{d.subjectPrefix() + p.Prefix() + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Storage:           jetstream.FileStorage,
		Replicas:          max(s.Replicas, 1),
		MaxMsgs:           unlimited(s.MaxMsgs),
		MaxBytes:          unlimited(s.MaxBytes),
		MaxAge:            s.MaxAge,
		Duplicates:        s.Duplicates,
		MaxMsgSize:        -1,
		MaxMsgsPerSubject: -1,
		MaxConsumers:      -1,
		Discard:           jetstream.DiscardOld,
	}
	if p != driver.DeadLetter {
		switch s.Retention {
		case RetentionWorkQueue:
			cfg.Retention = jetstream.WorkQueuePolicy
		case RetentionInterest:
			cfg.Retention = jetstream.InterestPolicy
		}
	}
	if s.Storage == StorageMemory {
		cfg.Storage = jetstream.MemoryStorage
	}
	if s.Duplicates > s.MaxAge && s.MaxAge > 0 {
		// The server refuses a de-duplication window longer than MaxAge.
		cfg.Duplicates = s.MaxAge
	}
	return cfg
}

func unlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// ensureStreams creates the streams that are missing and updates those whose
// limits differ from Options. It fails with a *StreamConflictError for a
// stream whose subjects, retention or storage differ.
func (d *Driver) ensureStreams(ctx context.Context) error {
	var errs []error
	for _, p := range persistentPatterns {
		want := d.streamConfig(p)
		st, err := d.js.Stream(ctx, want.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			if _, err := d.js.CreateStream(ctx, want); err != nil {
				var apiErr *jetstream.APIError
				if errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeSubjectOverlap {
					err = fmt.Errorf("another stream already stores %v (set Options.SubjectPrefix to share the server): %w", want.Subjects, err)
				}
				errs = append(errs, fmt.Errorf("natsbus: create stream %s: %w", want.Name, d.classify(err)))
			}
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("natsbus: stream %s: %w", want.Name, d.classify(err)))
			continue
		}
		have := st.CachedInfo().Config
		if diffs := immutableDiffs(have, want); len(diffs) > 0 {
			errs = append(errs, fmt.Errorf("natsbus: %w", &StreamConflictError{Stream: want.Name, Diffs: diffs}))
			continue
		}
		if upd, changed := withLimits(have, want); changed {
			if _, err := d.js.UpdateStream(ctx, upd); err != nil {
				errs = append(errs, fmt.Errorf("natsbus: update stream %s: %w", want.Name, d.classify(err)))
			}
		}
	}
	return errors.Join(errs...)
}

func immutableDiffs(have, want jetstream.StreamConfig) []StreamDiff {
	var diffs []StreamDiff
	if !slices.Equal(have.Subjects, want.Subjects) {
		diffs = append(diffs, StreamDiff{"subjects", fmt.Sprint(have.Subjects), fmt.Sprint(want.Subjects)})
	}
	if have.Retention != want.Retention {
		diffs = append(diffs, StreamDiff{"retention", have.Retention.String(), want.Retention.String()})
	}
	if have.Storage != want.Storage {
		diffs = append(diffs, StreamDiff{"storage", have.Storage.String(), want.Storage.String()})
	}
	return diffs
}

// withLimits returns have with want's limits, and whether any changed.
func withLimits(have, want jetstream.StreamConfig) (jetstream.StreamConfig, bool) {
	upd := have
	upd.MaxMsgs, upd.MaxBytes, upd.MaxAge = want.MaxMsgs, want.MaxBytes, want.MaxAge
	upd.Replicas, upd.Duplicates = want.Replicas, want.Duplicates
	changed := upd.MaxMsgs != have.MaxMsgs || upd.MaxBytes != have.MaxBytes || upd.MaxAge != have.MaxAge ||
		upd.Replicas != have.Replicas || upd.Duplicates != have.Duplicates
	return upd, changed
}

// subjectPrefix is Options.SubjectPrefix with its separating dot, or "".
func (d *Driver) subjectPrefix() string {
	if d.opts.SubjectPrefix == "" {
		return ""
	}
	return d.opts.SubjectPrefix + "."
}
