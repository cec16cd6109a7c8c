package awsbus_test

import (
	"context"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
)

// TestConformance runs the driver suite against the emulator on standard
// (non-FIFO) topics and queues; streams are FIFO whatever the configuration,
// so the ordering test runs on them.
//
// Harness.Deduplicates is false: SQS FIFO drops a repeated de-duplication id
// without telling the sender, so driver.ErrDuplicate is never observable, and
// standard queues do not de-duplicate at all (the suite publishes its
// duplicates as events).
func TestConformance(t *testing.T) {
	cfg := testConfig(t)
	drivertest.RunConformanceTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return awsbus.Open(ctx, cfg) },
	})
}

// TestDeadLetters runs the dead-letter store suite. Its malformed message is
// a body without any attribute, sent to the dead letters' queue with the
// raw SQS client.
func TestDeadLetters(t *testing.T) {
	cfg := testConfig(t)
	raw := newRawClients(t, cfg.Endpoint)
	drivertest.RunDeadLetterTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return awsbus.Open(ctx, cfg) },
		InjectDeadLetter: func(ctx context.Context, d driver.Driver, dl driver.Destination, body []byte) error {
			url, err := d.(*awsbus.Driver).DeadLetterQueueURL(ctx, dl)
			if err != nil {
				return err
			}
			_, err = raw.sqs.SendMessage(ctx, &sqs.SendMessageInput{QueueUrl: aws.String(url), MessageBody: aws.String(string(body))})
			return err
		},
	})
}
