package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	snstypes "github.com/aws/aws-sdk-go-v2/service/sns/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// AWS rows: every scenario uses the SNS+SQS emulator fauxqs at
// AWS_ENDPOINT_URL (http://127.0.0.1:4566 by default, which
// scripts/services.sh starts), under topic and queue names of its own that
// it deletes afterwards. The emulator is not AWS: the rates say nothing
// about AWS, so the figures compared are the client's CPU time and
// allocations per message (fauxqs runs in a process of its own, outside
// the measured process), each row publishing to a topic whose group queue
// a consumer in the same process empties.
const awsBroker = "AWS SNS+SQS on fauxqs"

// awsRawVisibility is the visibility timeout, in seconds, that the raw
// consumer asks for on receive: the driver's (awsbus hides what a receive
// brings for 4 s at first, and then renews what it holds).
const awsRawVisibility = 4

// Rows compared by the targets. The pipelined Publisher is the bus's
// counterpart of the raw batched row (both keep many messages in flight per
// caller, so that batches fill); PublishEvent, which returns once its own
// message was accepted, keeps at most one message per caller in flight, so
// that its batches (concurrent callers share them) are smaller: it is
// compared, for information, with both raw rows.
const (
	awsRawRow       = "raw aws-sdk-go-v2: PublishBatch of 10, ReceiveMessage of 10 + DeleteMessageBatch"
	awsRawSingleRow = "raw aws-sdk-go-v2: one Publish awaited per call"
	awsBusRow       = "eventbus on awsbus (PublishEvent; concurrent calls share batches)"
	awsPipelineRow  = "eventbus Publisher on awsbus (pipelined)"
)

func init() {
	register(Scenario{Name: awsRawRow, Broker: awsBroker, Role: RoleRaw, Run: runAWSRaw})
	register(Scenario{Name: awsRawSingleRow, Broker: awsBroker, Role: RoleReference, Run: runAWSRawSingle})
	register(Scenario{Name: awsPipelineRow, Broker: awsBroker, Role: RoleBus, Run: runAWSPipeline})
	register(Scenario{Name: awsBusRow, Broker: awsBroker, Role: RoleReference, Run: runAWSBus})
	registerTarget(Target{Broker: awsBroker, Goal: "eventbus Publisher (pipelined) client CPU/msg ≤ 1.2× the raw batched SDK calls'", Measure: func(g *group) (string, bool, bool) {
		bus, raw := g.role(RoleBus), g.role(RoleRaw)
		if bus == nil || raw == nil || raw.res.CPUPerMsg() == 0 {
			return "", false, false
		}
		r := bus.res.CPUPerMsg() / raw.res.CPUPerMsg()
		return fmt.Sprintf("%.2f×", r), r <= 1.2, true
	}})
	registerTarget(ratioOfRows(awsBroker, "eventbus Publisher (pipelined) allocs/msg / raw batched", awsPipelineRow, awsRawRow, Result.AllocsPerMsg))
	registerTarget(ratioOfRows(awsBroker, "eventbus PublishEvent client CPU/msg / raw batched", awsBusRow, awsRawRow, Result.CPUPerMsg))
	registerTarget(ratioOfRows(awsBroker, "eventbus PublishEvent client CPU/msg / raw with one Publish awaited per call (the same guarantee per call)",
		awsBusRow, awsRawSingleRow, Result.CPUPerMsg))
}

// awsEnv is one scenario's names on the emulator.
type awsEnv struct {
	endpoint string
	prefix   string
	tr       *http.Transport
	sns      *sns.Client
	sqs      *sqs.Client
}

func startAWS() *awsEnv {
	endpoint := os.Getenv("AWS_ENDPOINT_URL")
	if endpoint == "" {
		endpoint = "http://127.0.0.1:4566"
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	// The raw clients get a transport like the driver's (64 idle
	// connections per host), so that both reuse connections alike.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	cfg := aws.Config{
		Region: "us-east-1", Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient: &http.Client{Transport: tr},
	}
	return &awsEnv{
		endpoint: endpoint, prefix: "bench" + hex.EncodeToString(b[:]), tr: tr,
		sns: sns.NewFromConfig(cfg, func(o *sns.Options) { o.BaseEndpoint = aws.String(endpoint) }),
		sqs: sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = aws.String(endpoint) }),
	}
}

func (e *awsEnv) config() *awsbus.Config {
	return &awsbus.Config{Region: "us-east-1", Endpoint: e.endpoint, AccessKeyID: "test", SecretAccessKey: "test", Prefix: e.prefix}
}

// close deletes the scenario's queues and topics.
func (e *awsEnv) close(ctx context.Context) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	defer e.tr.CloseIdleConnections()
	if qs, err := e.sqs.ListQueues(ctx, &sqs.ListQueuesInput{QueueNamePrefix: aws.String(e.prefix + "-")}); err == nil {
		for _, u := range qs.QueueUrls {
			_, _ = e.sqs.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: aws.String(u)})
		}
	}
	pages := sns.NewListTopicsPaginator(e.sns, &sns.ListTopicsInput{})
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return
		}
		for _, t := range page.Topics {
			if arn := aws.ToString(t.TopicArn); strings.Contains(arn, ":"+e.prefix+"-") {
				_, _ = e.sns.DeleteTopic(ctx, &sns.DeleteTopicInput{TopicArn: t.TopicArn})
			}
		}
	}
}

// runAWSRaw: the SDK's clients doing what the bus does for an event, in
// full batches: PublishBatch of ten entries per call, each with the body
// and the five message attributes the bus sends (ce-specversion, ce-id,
// ce-source, ce-type, ce-time), to a topic with a raw-delivery group queue;
// one consumer goroutine long-polls it ten at a time (asking for every
// message attribute and the receive count, as the driver does) and deletes
// each batch with DeleteMessageBatch. The topology is made by the driver's
// own escape hatches, before the measurement.
func runAWSRaw(ctx context.Context, cfg Config) (Result, error) {
	return runAWSRawWith(ctx, cfg, false)
}

// runAWSRawSingle: as runAWSRaw, each publisher calling Publish for one
// message and waiting for it: the guarantee of one PublishEvent.
func runAWSRawSingle(ctx context.Context, cfg Config) (Result, error) {
	return runAWSRawWith(ctx, cfg, true)
}

func runAWSRawWith(ctx context.Context, cfg Config, single bool) (Result, error) {
	env := startAWS()
	defer env.close(ctx)
	dest := driver.NewDestination(driver.Event, benchEventType)
	d, err := awsbus.Open(ctx, env.config())
	if err != nil {
		return Result{}, err
	}
	topic, err := d.TopicARN(ctx, dest)
	if err == nil {
		var queue string
		queue, err = d.QueueURL(ctx, dest, "bench")
		_ = d.Close(ctx)
		if err == nil {
			return runAWSRawOn(ctx, cfg, env, topic, queue, single)
		}
	}
	_ = d.Close(ctx)
	return Result{}, err
}

func runAWSRawOn(ctx context.Context, cfg Config, env *awsEnv, topic, queue string, single bool) (Result, error) {
	tr := newTracker(cfg.Size)
	cctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Go(func() {
		// Each message counts once: one received again (its delete failed,
		// or it was received by a call whose answer was lost and that the
		// SDK retried) is deleted again and not counted twice.
		seen := make(map[string]struct{}, min(cfg.Messages, 1<<20))
		for cctx.Err() == nil {
			out, err := env.sqs.ReceiveMessage(cctx, &sqs.ReceiveMessageInput{
				QueueUrl: aws.String(queue), MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
				// As the driver asks: messages of a receive whose answer was
				// lost are hidden 4 s, not the queue's 30 s, which outlast
				// the drain of a short run.
				VisibilityTimeout:           awsRawVisibility,
				MessageAttributeNames:       []string{"All"},
				MessageSystemAttributeNames: []sqstypes.MessageSystemAttributeName{sqstypes.MessageSystemAttributeNameApproximateReceiveCount},
			})
			if err != nil {
				if cctx.Err() == nil {
					tr.fail(err)
				}
				return
			}
			if len(out.Messages) == 0 {
				continue
			}
			entries := make([]sqstypes.DeleteMessageBatchRequestEntry, len(out.Messages))
			for i, m := range out.Messages {
				if _, dup := seen[aws.ToString(m.MessageId)]; !dup {
					seen[aws.ToString(m.MessageId)] = struct{}{}
					tr.handled([]byte(aws.ToString(m.Body)))
				}
				entries[i] = sqstypes.DeleteMessageBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), ReceiptHandle: m.ReceiptHandle}
			}
			// Entries SQS failed to delete come back after the visibility
			// timeout, and are deleted then.
			if _, err := env.sqs.DeleteMessageBatch(cctx, &sqs.DeleteMessageBatchInput{QueueUrl: aws.String(queue), Entries: entries}); err != nil {
				if cctx.Err() == nil {
					tr.fail(err)
				}
				return
			}
		}
	})
	body := string(payload(cfg))
	var seq atomic.Int64
	attr := func(v string) snstypes.MessageAttributeValue {
		return snstypes.MessageAttributeValue{DataType: aws.String("String"), StringValue: aws.String(v)}
	}
	attrs := func() map[string]snstypes.MessageAttributeValue {
		return map[string]snstypes.MessageAttributeValue{
			"ce-specversion": attr("1.0"), "ce-id": attr(strconv.FormatInt(seq.Add(1), 10)), "ce-source": attr("bench"),
			"ce-type": attr(benchEventType), "ce-time": attr(time.Now().UTC().Format(time.RFC3339Nano)),
		}
	}
	return throughput(ctx, cfg, tr, func(int) (publisher, error) {
		if single {
			return publisher{publish: func(ctx context.Context, _ int) error {
				_, err := env.sns.Publish(ctx, &sns.PublishInput{TopicArn: aws.String(topic), Message: aws.String(body), MessageAttributes: attrs()})
				return err
			}}, nil
		}
		return publisher{batch: 10, publish: func(ctx context.Context, n int) error {
			entries := make([]snstypes.PublishBatchRequestEntry, n)
			for i := range entries {
				entries[i] = snstypes.PublishBatchRequestEntry{Id: aws.String(strconv.Itoa(i)), Message: aws.String(body), MessageAttributes: attrs()}
			}
			out, err := env.sns.PublishBatch(ctx, &sns.PublishBatchInput{TopicArn: aws.String(topic), PublishBatchRequestEntries: entries})
			if err != nil {
				return err
			}
			if len(out.Failed) > 0 {
				return errors.New(aws.ToString(out.Failed[0].Message))
			}
			return nil
		}}, nil
	})
}

// runAWSBus: PublishEvent of one event per call from the publishers on one
// bus (the driver merges concurrent calls into shared PublishBatch calls),
// a SubscribeEvents handler in group "bench" on another, each bus with its
// own awsbus driver.
func runAWSBus(ctx context.Context, cfg Config) (Result, error) {
	return runAWSBusWith(ctx, cfg, busThroughput)
}

// runAWSPipeline: as runAWSBus, the publishers sharing one
// eventbus.Publisher.
func runAWSPipeline(ctx context.Context, cfg Config) (Result, error) {
	return runAWSBusWith(ctx, cfg, pipelinePublishers)
}

func runAWSBusWith(ctx context.Context, cfg Config, publish busPublish) (Result, error) {
	env := startAWS()
	defer env.close(ctx)
	return runBusPair(ctx, cfg, "aws", func() (driver.Driver, error) {
		return awsbus.Open(ctx, env.config())
	}, publish)
}
