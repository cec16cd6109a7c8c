package awsbus_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus/driver"
)

// TestInteropRawConsumer reads one of our events with the SDK's own SQS
// client, as a program in another language would: CloudEvents attributes as
// ce- message attributes, the data as the body.
func TestInteropRawConsumer(t *testing.T) {
	cfg := testConfig(t)
	d := openDriver(t, cfg)
	raw := newRawClients(t, cfg.Endpoint)
	ctx := ctxFor(t, 30*time.Second)
	dest := driver.NewDestination(driver.Event, "order", "created")
	queue, err := d.QueueURL(ctx, dest, "billing")
	if err != nil {
		t.Fatal(err)
	}
	m := &driver.Message{
		ID: "ord-1", Source: "/shop", Type: "order.created", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		DataContentType: "application/json", Data: []byte(`{"order":1}`),
	}
	if err := d.Publish(ctx, dest, []*driver.Message{m}); err != nil {
		t.Fatal(err)
	}
	out, err := raw.sqs.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(queue), WaitTimeSeconds: 5, MessageAttributeNames: []string{"All"},
	})
	if err != nil || len(out.Messages) != 1 {
		t.Fatalf("raw receive: %d messages, %v", len(out.Messages), err)
	}
	got := out.Messages[0]
	if aws.ToString(got.Body) != `{"order":1}` {
		t.Errorf("body %q", aws.ToString(got.Body))
	}
	want := map[string]string{
		"ce-specversion": "1.0", "ce-id": "ord-1", "ce-source": "/shop", "ce-type": "order.created",
		"ce-time": "2026-01-02T03:04:05Z", "ce-datacontenttype": "application/json",
	}
	if len(got.MessageAttributes) != len(want) {
		t.Errorf("attributes %v, want exactly %v", keys(got.MessageAttributes), want)
	}
	for k, v := range want {
		if a := got.MessageAttributes[k]; aws.ToString(a.StringValue) != v || aws.ToString(a.DataType) != "String" {
			t.Errorf("attribute %s = %q (%s), want %q", k, aws.ToString(a.StringValue), aws.ToString(a.DataType), v)
		}
	}
	if _, err := raw.sqs.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(queue), ReceiptHandle: got.ReceiptHandle}); err != nil {
		t.Fatal(err)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestInteropRawProducers sends with the SDK's own clients what we read: a
// command in binary mode straight to its queue (with a foreign attribute,
// which becomes a header), and an event in the CloudEvents JSON format,
// without attributes, to the event's topic.
func TestInteropRawProducers(t *testing.T) {
	cfg := testConfig(t)
	d := openDriver(t, cfg)
	raw := newRawClients(t, cfg.Endpoint)
	ctx := ctxFor(t, 30*time.Second)

	cmd := driver.NewDestination(driver.Command, "billing", "charge")
	cmdSub, err := d.Subscribe(ctx, cmd, driver.SubscribeOptions{Group: "billing"})
	if err != nil {
		t.Fatal(err)
	}
	defer cmdSub.Close(ctx)
	queue, err := d.QueueURL(ctx, cmd, "billing")
	if err != nil {
		t.Fatal(err)
	}
	str := func(v string) sqstypes.MessageAttributeValue {
		return sqstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	if _, err := raw.sqs.SendMessage(ctx, &sqs.SendMessageInput{
		QueueUrl:    aws.String(queue),
		MessageBody: aws.String(`{"amount":42}`),
		MessageAttributes: map[string]sqstypes.MessageAttributeValue{
			"ce-specversion": str("1.0"), "ce-id": str("charge-7"), "ce-source": str("/python/checkout"),
			"ce-type": str("billing.charge"), "ce-datacontenttype": str("application/json"),
			"ce-tenant": str("acme"), "x-request-id": str("r-1"),
		},
	}); err != nil {
		t.Fatal(err)
	}
	ds, err := cmdSub.Receive(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	got := ds[0]
	if got.Err != nil {
		t.Fatal(got.Err)
	}
	m := got.Message
	if m.ID != "charge-7" || m.Source != "/python/checkout" || m.Type != "billing.charge" ||
		m.DataContentType != "application/json" || string(m.Data) != `{"amount":42}` ||
		m.Extensions["tenant"] != "acme" || m.Header["x-request-id"][0] != "r-1" || m.Mode != driver.Binary {
		t.Errorf("command read as %+v", m)
	}
	if err := cmdSub.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}

	ev := driver.NewDestination(driver.Event, "user", "registered")
	evSub, err := d.Subscribe(ctx, ev, driver.SubscribeOptions{Group: "mailer"})
	if err != nil {
		t.Fatal(err)
	}
	defer evSub.Close(ctx)
	topic, err := d.TopicARN(ctx, ev)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{
		"specversion": "1.0", "id": "u-9", "source": "/node/signup", "type": "user.registered",
		"time": "2026-05-06T07:08:09.123Z", "datacontenttype": "application/json", "data": map[string]any{"user": "ada"},
	})
	if _, err := raw.sns.Publish(ctx, &sns.PublishInput{TopicArn: aws.String(topic), Message: aws.String(string(body)),
		MessageAttributes: map[string]snstypes.MessageAttributeValue{}}); err != nil {
		t.Fatal(err)
	}
	ds, err = evSub.Receive(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if ds[0].Err != nil {
		t.Fatal(ds[0].Err)
	}
	m = ds[0].Message
	if m.ID != "u-9" || m.Source != "/node/signup" || m.Type != "user.registered" || string(m.Data) != `{"user":"ada"}` ||
		m.Mode != driver.Structured || !m.Time.Equal(time.Date(2026, 5, 6, 7, 8, 9, 123e6, time.UTC)) {
		t.Errorf("structured event read as %+v", m)
	}
	if err := evSub.Ack(ctx, ds); err != nil {
		t.Fatal(err)
	}
}
