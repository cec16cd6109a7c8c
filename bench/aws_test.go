package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// loseOneReceive loses the answer of the first ReceiveMessage call that
// brought messages, as a connection reset after the server answered: SQS
// hid the messages, and the SDK retries the call.
type loseOneReceive struct {
	base http.RoundTripper
	lost atomic.Bool
}

func (l *loseOneReceive) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := l.base.RoundTrip(req)
	if err != nil || req.Header.Get("X-Amz-Target") != "AmazonSQS.ReceiveMessage" || l.lost.Load() {
		return resp, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if bytes.Contains(body, []byte(`"ReceiptHandle"`)) && l.lost.CompareAndSwap(false, true) {
		return nil, &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// TestAWSRawRowSurvivesALostReceive: the raw AWS row's consumer handles
// every message although the answer of one receive was lost (its ten
// messages stay hidden for the visibility timeout it asked for), within
// the smoke test's drain.
func TestAWSRawRowSurvivesALostReceive(t *testing.T) {
	ctx := context.Background()
	env := startAWS()
	defer env.close(ctx)
	lossy := &loseOneReceive{base: env.tr}
	env.sqs = sqs.NewFromConfig(aws.Config{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient: &http.Client{Transport: lossy},
	}, func(o *sqs.Options) { o.BaseEndpoint = aws.String(env.endpoint) })
	d, err := awsbus.Open(ctx, env.config())
	if err != nil {
		t.Fatal(err)
	}
	dest := driver.NewDestination(driver.Event, benchEventType)
	topic, err := d.TopicARN(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	queue, err := d.QueueURL(ctx, dest, "bench")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Messages = 2000
	cfg.Drain = 20 * time.Second
	res, err := runAWSRawOn(ctx, cfg, env, topic, queue, false)
	if err != nil {
		t.Fatal(err)
	}
	if !lossy.lost.Load() {
		t.Fatal("no receive lost its answer: the test tested nothing")
	}
	if res.Messages != cfg.Messages {
		t.Fatalf("Messages = %d, want %d", res.Messages, cfg.Messages)
	}
}
