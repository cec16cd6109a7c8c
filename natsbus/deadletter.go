package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/marty-msf/eventbus/driver"
)

var _ driver.DeadLetterStore = (*Driver)(nil)

// The dead letters are the messages of the DEADLETTER stream (limits
// retention: consuming them removes nothing), one subject per dead-letter
// destination. The driver reads them by sequence with the stream's message
// get, which creates no consumer and changes no consumer's position; a Ref
// is a stream sequence.

// DeadLetterDestinations lists the dead-letter destinations that hold
// messages in the DEADLETTER stream, sorted by name.
func (d *Driver) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	const op = "list dead-letter destinations"
	st, err := d.deadLetterStream(ctx, op)
	if st == nil {
		return nil, err
	}
	prefix := d.subjectPrefix()
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(prefix+driver.DeadLetter.Prefix()+".>"))
	if err != nil {
		return nil, d.dlError(op, err)
	}
	out := make([]driver.Destination, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		out = append(out, driver.Destination{Pattern: driver.DeadLetter, Name: strings.TrimPrefix(subj, prefix)})
	}
	slices.SortFunc(out, func(a, b driver.Destination) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// ReadDeadLetters passes the messages held on dl, oldest first, up to the
// last one stored when it started, one message get per message.
func (d *Driver) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	op := "read dead letters of " + strconv.Quote(dl.Name)
	subj, st, err := d.deadLetterSubject(ctx, op, dl)
	if st == nil {
		return err
	}
	last, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return d.dlError(op, err)
	}
	for seq := uint64(1); seq <= last.Sequence; {
		raw, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return d.dlError(op, err)
		}
		if raw.Sequence > last.Sequence {
			return nil
		}
		// A body that is no envelope is passed with what could be read and
		// its raw data, as the contract asks: the error is not news.
		m, _ := decode(raw.Header, raw.Data)
		if !fn(driver.DeadLetterEntry{Ref: strconv.FormatUint(raw.Sequence, 10), Message: m}) {
			return nil
		}
		seq = raw.Sequence + 1
	}
	return nil
}

// DeleteDeadLetters removes the messages named by refs (stream sequences)
// from dl. A sequence that holds no message of dl's subject is skipped.
func (d *Driver) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	op := "delete dead letters of " + strconv.Quote(dl.Name)
	subj, st, err := d.deadLetterSubject(ctx, op, dl)
	if st == nil {
		return 0, err
	}
	n := 0
	for _, ref := range refs {
		seq, err := strconv.ParseUint(ref, 10, 64)
		if err != nil || seq == 0 {
			continue // names no message of this stream
		}
		// The subject of a sequence never changes: once it is dl's, the
		// delete below can only find the message or find it gone.
		raw, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return n, d.dlError(op, err)
		}
		if raw.Subject != subj {
			continue
		}
		if err := st.DeleteMsg(ctx, seq); err != nil {
			// Removed meanwhile by someone else, or a failure.
			if _, gone := st.GetMsg(ctx, seq); errors.Is(gone, jetstream.ErrMsgNotFound) {
				continue
			}
			return n, d.dlError(op, err)
		}
		n++
	}
	return n, nil
}

// PurgeDeadLetters removes every message held on dl with a purge of the
// stream filtered by dl's subject.
func (d *Driver) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	op := "purge dead letters of " + strconv.Quote(dl.Name)
	subj, st, err := d.deadLetterSubject(ctx, op, dl)
	if st == nil {
		return 0, err
	}
	// The client's Purge drops the count the server returns: ask directly.
	req, err := json.Marshal(jetstream.StreamPurgeRequest{Subject: subj})
	if err != nil {
		return 0, fmt.Errorf("natsbus: %s: %w", op, err)
	}
	api := d.js.Options().APIPrefix
	if api == "" {
		api = jetstream.DefaultAPIPrefix
	}
	if !strings.HasSuffix(api, ".") {
		api += "."
	}
	msg, err := d.nc.RequestWithContext(ctx, api+"STREAM.PURGE."+st.CachedInfo().Config.Name, req)
	if err != nil {
		return 0, d.dlError(op, err)
	}
	var resp struct {
		Error  *jetstream.APIError `json:"error,omitempty"`
		Purged uint64              `json:"purged"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return 0, fmt.Errorf("natsbus: %s: unreadable reply from the server: %w", op, err)
	}
	if resp.Error != nil {
		return 0, d.dlError(op, resp.Error)
	}
	return int(resp.Purged), nil
}

// deadLetterStream returns the DEADLETTER stream, or a nil stream and the
// error that ends the call.
func (d *Driver) deadLetterStream(ctx context.Context, op string) (jetstream.Stream, error) {
	if d.isClosed() {
		return nil, fmt.Errorf("natsbus: %s: %w", op, driver.ErrClosed)
	}
	if d.js == nil {
		return nil, fmt.Errorf("natsbus: %s: dead letters need JetStream, which is off: %w", op, driver.ErrUnsupported)
	}
	st, err := d.js.Stream(ctx, d.StreamName(driver.DeadLetter))
	if err != nil {
		return nil, d.dlError(op, err)
	}
	return st, nil
}

// deadLetterSubject checks dl and returns its subject and the stream that
// holds it, or a nil stream and the error that ends the call.
func (d *Driver) deadLetterSubject(ctx context.Context, op string, dl driver.Destination) (string, jetstream.Stream, error) {
	if d.isClosed() {
		return "", nil, fmt.Errorf("natsbus: %s: %w", op, driver.ErrClosed)
	}
	if dl.Pattern != driver.DeadLetter {
		return "", nil, fmt.Errorf("natsbus: %s: %w", op, &DestinationError{Name: dl.Name, Reason: "not a dead-letter destination"})
	}
	subj, err := subjectOf(dl)
	if err != nil {
		return "", nil, fmt.Errorf("natsbus: %s: %w", op, err)
	}
	st, err := d.deadLetterStream(ctx, op)
	return d.subjectPrefix() + subj, st, err
}

func (d *Driver) dlError(op string, err error) error {
	return fmt.Errorf("natsbus: %s: %w", op, d.classify(err))
}
