package awsbus_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/marty-msf/eventbus/driver"
)

// countingTransport counts the batch publishing calls a driver makes.
type countingTransport struct {
	base  http.RoundTripper
	calls atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	switch {
	case strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".SendMessageBatch"):
		c.calls.Add(1)
	case strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded") && r.Body != nil:
		// SNS's query protocol names the action in the form.
		body, err := io.ReadAll(r.Body)
		r.Body.Close()
		if err != nil {
			return nil, err
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		if bytes.Contains(body, []byte("Action=PublishBatch")) {
			c.calls.Add(1)
		}
	}
	return c.base.RoundTrip(r)
}

// TestConcurrentPublishersShareBatches: 400 single-message publishes from 40
// goroutines, to an event topic and to a command queue, leave in fewer
// batch calls than publishes, and every message arrives exactly once.
func TestConcurrentPublishersShareBatches(t *testing.T) {
	base := testConfig(t)
	for _, dest := range []driver.Destination{
		driver.NewDestination(driver.Event, "combine", "event"),
		driver.NewDestination(driver.Command, "combine", "command"),
	} {
		t.Run(dest.Pattern.String(), func(t *testing.T) {
			tr := &countingTransport{base: http.DefaultTransport.(*http.Transport).Clone()}
			t.Cleanup(tr.base.(*http.Transport).CloseIdleConnections)
			cfg := *base
			cfg.AWSConfig = &aws.Config{
				Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
				HTTPClient: &http.Client{Transport: tr}, BaseEndpoint: aws.String(base.Endpoint),
			}
			pub := openDriver(t, &cfg)
			d := openDriver(t, base)
			ctx := ctxFor(t, 90*time.Second)
			sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true})
			if err != nil {
				t.Fatal(err)
			}
			defer sub.Close(ctx)
			// Create the topic or queue first: only publishing is counted.
			if err := pub.Publish(ctx, dest, []*driver.Message{{ID: "warm", Source: "/c", Type: "combine.test"}}); err != nil {
				t.Fatal(err)
			}
			const goroutines, each = 40, 10
			before := tr.calls.Load()
			var wg sync.WaitGroup
			errs := make(chan error, goroutines*each)
			for g := range goroutines {
				wg.Go(func() {
					for i := range each {
						m := &driver.Message{ID: fmt.Sprintf("m-%d-%d", g, i), Source: "/c", Type: "combine.test", Data: []byte("x")}
						if err := pub.Publish(ctx, dest, []*driver.Message{m}); err != nil {
							errs <- err
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			calls := tr.calls.Load() - before
			t.Logf("%d publishes in %d batch calls", goroutines*each, calls)
			if calls == 0 || calls >= goroutines*each {
				t.Errorf("%d publishes made %d batch calls, want fewer (and some)", goroutines*each, calls)
			}
			seen := map[string]int{}
			for len(seen) < goroutines*each+1 {
				ds, err := sub.Receive(ctx, 10)
				if err != nil {
					t.Fatalf("received %d: %v", len(seen), err)
				}
				for _, dl := range ds {
					seen[dl.Message.ID]++
				}
				if err := sub.Ack(ctx, ds); err != nil {
					t.Fatal(err)
				}
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("%s delivered %d times", id, n)
				}
			}
		})
	}
}
