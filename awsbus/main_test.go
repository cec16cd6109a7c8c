package awsbus_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"go.uber.org/goleak"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testConfig returns a Config for the emulator at AWS_ENDPOINT_URL with a
// name prefix of this test alone; every topic and queue under it is deleted
// when the test ends.
func testConfig(t testing.TB) *awsbus.Config {
	t.Helper()
	endpoint := testenv.AWSEndpoint(t)
	cfg := &awsbus.Config{
		Region:          "us-east-1",
		Endpoint:        endpoint,
		AccessKeyID:     "test",
		SecretAccessKey: "test",
		Prefix:          "ebt" + unique(),
	}
	t.Cleanup(func() { removeAll(t, endpoint, cfg.Prefix) })
	return cfg
}

func unique() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// rawClients are the SDK's own clients, as someone else's program uses them.
type rawClients struct {
	sns *sns.Client
	sqs *sqs.Client
}

func newRawClients(t testing.TB, endpoint string) *rawClients {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	cfg := aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:  &http.Client{Transport: tr},
	}
	return &rawClients{
		sns: sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		sqs: sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

// removeAll deletes every topic and queue whose name starts with prefix.
func removeAll(t testing.TB, endpoint, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newRawClients(t, endpoint)
	qs := sqs.NewListQueuesPaginator(c.sqs, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(prefix + "-")})
	for qs.HasMorePages() {
		page, err := qs.NextPage(ctx)
		if err != nil {
			t.Errorf("cleanup: list queues: %v", err)
			break
		}
		for _, u := range page.QueueUrls {
			if _, err := c.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)}); err != nil {
				t.Errorf("cleanup: delete queue %s: %v", u, err)
			}
		}
	}
	ts := sns.NewListTopicsPaginator(c.sns, &sns.ListTopicsInput{})
	for ts.HasMorePages() {
		page, err := ts.NextPage(ctx)
		if err != nil {
			t.Errorf("cleanup: list topics: %v", err)
			break
		}
		for _, tp := range page.Topics {
			arn := aws.ToString(tp.TopicArn)
			if !strings.HasPrefix(arn[strings.LastIndexByte(arn, ':')+1:], prefix+"-") {
				continue
			}
			if _, err := c.sns.DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: aws.String(arn)}); err != nil {
				t.Errorf("cleanup: delete topic %s: %v", arn, err)
			}
		}
	}
}

// openDriver opens a driver on cfg, closed when the test ends.
func openDriver(t testing.TB, cfg *awsbus.Config) *awsbus.Driver {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := awsbus.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.Close(context.Background()) })
	return d
}

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
