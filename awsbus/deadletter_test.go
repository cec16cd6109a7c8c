package awsbus_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// TestRedrive: with MaxReceiveCount 2, a message received twice and given
// back both times is moved by SQS itself (the queue's redrive policy) to
// the queue that keeps its destination's dead letters, where
// ReadDeadLetters finds it with its id and content, under the same Ref
// twice; DeleteDeadLetters removes it. For an event group's queue and a
// command queue, on standard and FIFO queues.
func TestRedrive(t *testing.T) {
	for _, fifo := range []bool{false, true} {
		for _, dest := range []driver.Destination{
			driver.NewDestination(driver.Event, "redrive", "event"),
			driver.NewDestination(driver.Command, "redrive", "command"),
		} {
			name := dest.Pattern.String()
			if fifo {
				name += "/fifo"
			}
			t.Run(name, func(t *testing.T) {
				cfg := testConfig(t)
				cfg.FIFO, cfg.MaxReceiveCount = fifo, 2
				d := openDriver(t, cfg)
				ctx := ctxFor(t, 90*time.Second)
				sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true, AckWait: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer sub.Close(context.Background())
				m := &driver.Message{ID: "poison-1", Source: "/redrive", Type: "redrive.test", Key: "k", Data: []byte("poison")}
				if err := d.Publish(ctx, dest, []*driver.Message{m.Clone()}); err != nil {
					t.Fatal(err)
				}
				for attempt := 1; attempt <= 2; attempt++ {
					ds, err := sub.Receive(ctx, 1)
					if err != nil {
						t.Fatalf("receive %d: %v", attempt, err)
					}
					if ds[0].Message.ID != m.ID || ds[0].Attempt != attempt {
						t.Fatalf("receive %d: %q attempt %d", attempt, ds[0].Message.ID, ds[0].Attempt)
					}
					if err := sub.Nack(ctx, ds, 0); err != nil {
						t.Fatal(err)
					}
				}
				dl := driver.DeadLetterOf(dest)
				var got []driver.DeadLetterEntry
				for ctx.Err() == nil && len(got) == 0 {
					got = nil
					if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
						got = append(got, e)
						return true
					}); err != nil {
						t.Fatal(err)
					}
				}
				if len(got) != 1 || got[0].Message.ID != m.ID || string(got[0].Message.Data) != "poison" || got[0].Message.Key != "k" {
					t.Fatalf("dead letters of %s: %+v, want %q", dl, got, m.ID)
				}
				var again []string
				if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
					again = append(again, e.Ref)
					return true
				}); err != nil {
					t.Fatal(err)
				}
				if len(again) != 1 || again[0] != got[0].Ref {
					t.Fatalf("a second read passed Refs %q, want %q", again, got[0].Ref)
				}
				if n, err := d.DeleteDeadLetters(ctx, dl, []string{got[0].Ref}); n != 1 || err != nil {
					t.Fatalf("DeleteDeadLetters: %d, %v", n, err)
				}
				rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if ds, err := sub.Receive(rctx, 1); !errors.Is(err, context.DeadlineExceeded) {
					t.Fatalf("the group received %v (%v) after the redrive", ds, err)
				}
			})
		}
	}
}

// TestDeadLetterErrors: a destination that is not a dead-letter one is
// refused with driver.ErrUnsupported.
func TestDeadLetterErrors(t *testing.T) {
	d := openDriver(t, testConfig(t))
	ctx := ctxFor(t, 30*time.Second)
	ev := driver.NewDestination(driver.Event, "not", "deadletter")
	if err := d.ReadDeadLetters(ctx, ev, func(driver.DeadLetterEntry) bool { return true }); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("ReadDeadLetters of an event destination: %v", err)
	}
	if _, err := d.PurgeDeadLetters(ctx, ev); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("PurgeDeadLetters of an event destination: %v", err)
	}
	if _, err := d.DeleteDeadLetters(ctx, ev, []string{"x"}); !errors.Is(err, driver.ErrUnsupported) {
		t.Errorf("DeleteDeadLetters of an event destination: %v", err)
	}
}

// redeliverTransport, once armed, makes the messages of the next
// ReceiveMessage answer that brings some visible again before it hands
// the answer on, as a visibility timeout that ran out would: the reader
// receives them a second time, under new receipt handles.
type redeliverTransport struct {
	base  http.RoundTripper
	raw   *rawClients
	armed atomic.Bool
	fired atomic.Int64 // messages made visible again
}

func (rt *redeliverTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".ReceiveMessage") || !rt.armed.Load() {
		return rt.base.RoundTrip(r)
	}
	reqBody, err := io.ReadAll(r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	r.Body = io.NopCloser(bytes.NewReader(reqBody))
	resp, err := rt.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	var req struct{ QueueUrl string }
	var got struct {
		Messages []struct{ ReceiptHandle string }
	}
	if json.Unmarshal(reqBody, &req) != nil || json.Unmarshal(body, &got) != nil || len(got.Messages) == 0 || !rt.armed.CompareAndSwap(true, false) {
		return resp, nil
	}
	for _, m := range got.Messages {
		if _, err := rt.raw.sqs.ChangeMessageVisibility(r.Context(), &sqs.ChangeMessageVisibilityInput{
			QueueUrl: aws.String(req.QueueUrl), ReceiptHandle: aws.String(m.ReceiptHandle), VisibilityTimeout: 0,
		}); err != nil {
			return nil, err
		}
		rt.fired.Add(1)
	}
	return resp, nil
}

// TestDeadLetterReceivedTwiceInOneRead: a dead letter that a read receives
// a second time (its visibility ran out) is given back and deleted with its
// latest receipt handle, the only one SQS honours: a read gives it back at
// once (the next read sees it), and a purge removes it (the queue is empty
// afterwards, not holding it hidden).
func TestDeadLetterReceivedTwiceInOneRead(t *testing.T) {
	cfg := testConfig(t)
	rt := &redeliverTransport{base: http.DefaultTransport.(*http.Transport).Clone(), raw: newRawClients(t, cfg.Endpoint)}
	t.Cleanup(rt.base.(*http.Transport).CloseIdleConnections)
	cfg.AWSConfig = &aws.Config{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient: &http.Client{Transport: rt}, BaseEndpoint: aws.String(cfg.Endpoint),
	}
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 90*time.Second)
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "twice", "event"))
	want := []string{"dl-1", "dl-2"}
	for _, id := range want {
		if err := d.Publish(ctx, dl, []*driver.Message{{ID: id, Source: "/twice", Type: "twice.test", Data: []byte(id)}}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() []string {
		t.Helper()
		var got []string
		if err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			got = append(got, e.Message.ID)
			return true
		}); err != nil {
			t.Fatalf("ReadDeadLetters: %v", err)
		}
		slices.Sort(got)
		return got
	}
	for got := read(); !slices.Equal(got, want); got = read() {
		if ctx.Err() != nil {
			t.Fatalf("dead letters %q, want %q", got, want)
		}
	}
	rt.armed.Store(true)
	if got := read(); !slices.Equal(got, want) || rt.fired.Load() == 0 {
		t.Fatalf("a read that received some twice (%d) passed %q, want %q", rt.fired.Load(), got, want)
	}
	if got := read(); !slices.Equal(got, want) {
		t.Fatalf("the next read passed %q, want %q: not given back", got, want)
	}
	rt.armed.Store(true)
	if n, err := d.PurgeDeadLetters(ctx, dl); n != len(want) || err != nil || rt.fired.Load() < 2 {
		t.Fatalf("PurgeDeadLetters: %d, %v (received twice: %d)", n, err, rt.fired.Load())
	}
	url, err := d.DeadLetterQueueURL(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	attrs, err := rt.raw.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{
		QueueUrl: aws.String(url),
		AttributeNames: []sqstypes.QueueAttributeName{
			sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible,
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages, sqstypes.QueueAttributeNameApproximateNumberOfMessagesNotVisible} {
		if n := attrs.Attributes[string(a)]; n != "0" {
			t.Errorf("after the purge, %s = %s, want 0", a, n)
		}
	}
}

// TestFIFOKeeperGroups: messages that SQS's redrive policy moved from a FIFO
// queue keep their message group in the keeper queue, and SQS returns none
// of a group's later messages while its first is held. A read passes on
// what it reached and returns a *HiddenDeadLettersError counting the rest;
// DeleteDeadLetters removes a group's first message; PurgeDeadLetters reads
// again after each deletion and removes them all. fauxqs returns one
// message per group per receive (AWS up to ten), so a read here reaches
// the first message of each group only.
func TestFIFOKeeperGroups(t *testing.T) {
	cfg := testConfig(t)
	cfg.FIFO = true
	d := openDriver(t, cfg)
	ctx := ctxFor(t, 90*time.Second)
	dl := driver.DeadLetterOf(driver.NewDestination(driver.Command, "fifokeeper", "command"))
	url, err := d.DeadLetterQueueURL(ctx, dl)
	if err != nil {
		t.Fatal(err)
	}
	raw := newRawClients(t, cfg.Endpoint)
	// As SQS's redrive leaves them: three of group k, one of group solo.
	for _, m := range [][2]string{{"k", "k1"}, {"k", "k2"}, {"k", "k3"}, {"solo", "s1"}} {
		if _, err := raw.sqs.SendMessage(ctx, &sqs.SendMessageInput{
			QueueUrl: aws.String(url), MessageBody: aws.String(m[1]), MessageGroupId: aws.String(m[0]), MessageDeduplicationId: aws.String(m[1]),
		}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() (map[string]string, error) {
		t.Helper()
		got := map[string]string{} // data → ref
		err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			got[string(e.Message.Data)] = e.Ref
			return true
		})
		return got, err
	}
	checkHidden := func(got map[string]string, err error, want []string, hidden int) {
		t.Helper()
		var he *awsbus.HiddenDeadLettersError
		if !errors.As(err, &he) || he.Hidden != hidden || he.Read != len(want) {
			t.Fatalf("ReadDeadLetters: %v, want a HiddenDeadLettersError with %d read, %d hidden", err, len(want), hidden)
		}
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
			t.Fatalf("read %q, want %q", keys, want)
		}
	}
	got, err := read()
	checkHidden(got, err, []string{"k1", "s1"}, 2)
	if n, err := d.DeleteDeadLetters(ctx, dl, []string{got["k1"]}); n != 1 || err != nil {
		t.Fatalf("DeleteDeadLetters(k1): %d, %v", n, err)
	}
	got, err = read()
	checkHidden(got, err, []string{"k2", "s1"}, 1)
	if n, err := d.PurgeDeadLetters(ctx, dl); n != 3 || err != nil {
		t.Fatalf("PurgeDeadLetters: %d, %v; want 3 (k2, k3, s1)", n, err)
	}
	if got, err := read(); len(got) != 0 || err != nil {
		t.Fatalf("after the purge, read %v, %v", got, err)
	}
}
