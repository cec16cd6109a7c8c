package awsbus_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// tenantEvent is an event of type typ with the tenant extension.
func tenantEvent(typ, id, tenant string) *driver.Message {
	return &driver.Message{ID: id, Source: "/test", Type: typ, Data: []byte("{}"), DataContentType: "application/json",
		Extensions: map[string]string{"tenant": tenant}}
}

// tenantEvents publishes n events to dest, the i-th of tenant
// tenants[i%len(tenants)], and returns the ids of each tenant.
func tenantEvents(t *testing.T, ctx context.Context, d driver.Driver, dest driver.Destination, tag string, n int, tenants ...string) map[string][]string {
	t.Helper()
	ids := map[string][]string{}
	msgs := make([]*driver.Message, n)
	for i := range msgs {
		tenant := tenants[i%len(tenants)]
		msgs[i] = tenantEvent(dest.Name[len("events."):], fmt.Sprintf("%s-%03d-%s", tag, i, tenant), tenant)
		ids[tenant] = append(ids[tenant], msgs[i].ID)
	}
	if err := d.Publish(ctx, dest, msgs); err != nil {
		t.Fatal(err)
	}
	return ids
}

// queueDepth is SQS's count of the visible messages of queue, once it
// reached at least want (SNS delivers to queues after Publish returns on
// AWS; fauxqs before).
func queueDepth(t *testing.T, ctx context.Context, raw *rawClients, queue string, want int) int {
	t.Helper()
	for {
		out, err := raw.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(queue),
			AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameApproximateNumberOfMessages}})
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(out.Attributes[string(sqstypes.QueueAttributeNameApproximateNumberOfMessages)])
		if n >= want || ctx.Err() != nil {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// receiveIDs receives n deliveries, checks that one more long poll brings
// nothing beyond them, acks them and returns their ids, sorted.
func receiveIDs(t *testing.T, ctx context.Context, sub driver.Subscription, n int) []string {
	t.Helper()
	var held []*driver.Delivery
	for len(held) < n {
		ds, err := sub.Receive(ctx, n-len(held))
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(held), n, err)
		}
		held = append(held, ds...)
	}
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	defer cancel()
	if more, err := sub.Receive(short, 10); err == nil {
		t.Errorf("delivered beyond the selection: %s", more[0].Message.ID)
	}
	if err := sub.Ack(ctx, held); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(held))
	for i, d := range held {
		if d.Err != nil {
			t.Errorf("delivery %s: %v", d.Message.ID, d.Err)
		}
		ids[i] = d.Message.ID
	}
	slices.Sort(ids)
	return ids
}

// subscriptionOf returns the ARN of the SNS subscription of queue to
// dest's topic.
func subscriptionOf(t *testing.T, ctx context.Context, d *awsbus.Driver, raw *rawClients, dest driver.Destination, queue string) string {
	t.Helper()
	topic, err := d.TopicARN(ctx, dest)
	if err != nil {
		t.Fatal(err)
	}
	qa, err := raw.sqs.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: aws.String(queue),
		AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
	if err != nil {
		t.Fatal(err)
	}
	subs, err := raw.sns.ListSubscriptionsByTopic(ctx, &sns.ListSubscriptionsByTopicInput{TopicArn: aws.String(topic)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range subs.Subscriptions {
		if aws.ToString(s.Endpoint) == qa.Attributes[string(sqstypes.QueueAttributeNameQueueArn)] {
			return aws.ToString(s.SubscriptionArn)
		}
	}
	t.Fatalf("queue %s is not subscribed to %s", queue, topic)
	return ""
}

// expectIDs checks that each of subs (by name) delivers exactly the ids
// want (sorted).
func expectIDs(t *testing.T, ctx context.Context, want []string, subs map[string]driver.Subscription) {
	t.Helper()
	for name, sub := range subs {
		if got := receiveIDs(t, ctx, sub, len(want)); !slices.Equal(got, want) {
			t.Errorf("%s received %v\nwant %v", name, got, want)
		}
	}
}

// filterPolicyOf reads the filter policy of the SNS subscription of queue
// to dest's topic ("" when it has none).
func filterPolicyOf(t *testing.T, ctx context.Context, d *awsbus.Driver, raw *rawClients, dest driver.Destination, queue string) string {
	t.Helper()
	out, err := raw.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{
		SubscriptionArn: aws.String(subscriptionOf(t, ctx, d, raw, dest, queue))})
	if err != nil {
		t.Fatal(err)
	}
	if p := out.Attributes["FilterPolicy"]; p != "" && p != "{}" {
		return p
	}
	return ""
}

// selectEnv is a test's driver, raw clients and context.
func selectEnv(t *testing.T) (*awsbus.Config, *awsbus.Driver, *rawClients, context.Context) {
	cfg := testConfig(t)
	return cfg, openDriver(t, cfg), newRawClients(t, cfg.Endpoint), ctxFor(t, 90*time.Second)
}

// setSelection subscribes with opts and closes the subscription at once:
// the group's queue stays, with the filter policy of opts.Select.
func setSelection(t *testing.T, ctx context.Context, d *awsbus.Driver, dest driver.Destination, opts driver.SubscribeOptions) {
	t.Helper()
	sub, err := d.Subscribe(ctx, dest, opts)
	if err == nil {
		err = sub.Close(ctx)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func TestAttributeSelectCapability(t *testing.T) {
	d := openDriver(t, testConfig(t))
	if !d.Capabilities().AttributeSelect {
		t.Error("Capabilities.AttributeSelect is false")
	}
}

// TestAttributeSelect: a group's queue whose subscription selects one
// tenant in ten receives, of 100 events, only that tenant's ten (SQS's
// count of the queue shows it, before any consumer reads), and the
// subscription delivers exactly those. Events that do not carry the
// attribute on its own — structured mode, or an extension beyond the
// attribute budget — pass SNS whatever their value (the bus filters them).
// A private subscription is selected the same way.
func TestAttributeSelect(t *testing.T) {
	cfg, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "created")
	opts := driver.SubscribeOptions{Group: "acme-billing", Durable: true,
		Select: []driver.AttributeMatch{{Name: "tenant", Value: "t3"}, {Name: "partitionkey", Value: "k"}}}
	setSelection(t, ctx, d, dest, opts)
	private, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Select: opts.Select})
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close(ctx)
	tenants := make([]string, 10)
	for i := range tenants {
		tenants[i] = fmt.Sprint("t", i)
	}
	ids := tenantEvents(t, ctx, d, dest, "a", 100, tenants...)
	// Other tenants' events that SNS cannot see the tenant of.
	structured := tenantEvent("order.created", "b-structured-t5", "t5")
	structured.Mode = driver.Structured
	// Five extensions named ahead of tenant and a key: tenant rides in the
	// eventbus attribute.
	crowded := tenantEvent("order.created", "b-crowded-t6", "t6")
	crowded.Subject, crowded.Key = "s", "k"
	for _, name := range []string{"a1", "a2", "a3", "a4", "a5"} {
		crowded.Extensions[name] = "x"
	}
	if err := d.Publish(ctx, dest, []*driver.Message{structured, crowded}); err != nil {
		t.Fatal(err)
	}
	want := append(slices.Clone(ids["t3"]), structured.ID, crowded.ID)
	slices.Sort(want)

	queue, err := d.QueueURL(ctx, dest, opts.Group)
	if err != nil {
		t.Fatal(err)
	}
	if n := queueDepth(t, ctx, raw, queue, len(want)); n != len(want) {
		t.Fatalf("the group's queue holds %d messages, want the %d of tenant t3 and the 2 SNS cannot see the tenant of", n, len(want))
	}
	// Another process's member finds the subscription with its policy.
	sub, err := openDriver(t, cfg).Subscribe(ctx, dest, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	expectIDs(t, ctx, want, map[string]driver.Subscription{"group": sub, "private subscription": private})
}

// TestAttributeSelectFollowsLatest: the filter policy of a group's
// subscription follows the latest member: a new selection replaces the
// old one (and what it selects arrives, what only the old one did does
// not), the same selection leaves the policy as it is, and none removes it.
func TestAttributeSelectFollowsLatest(t *testing.T) {
	_, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "invoice", "paid")
	subscribe := func(sel ...driver.AttributeMatch) {
		t.Helper()
		setSelection(t, ctx, d, dest, driver.SubscribeOptions{Group: "g", Select: sel})
	}
	queue, err := d.QueueURL(ctx, dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	policy := func() map[string]any {
		t.Helper()
		p := filterPolicyOf(t, ctx, d, raw, dest, queue)
		if p == "" {
			return nil
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(p), &v); err != nil {
			t.Fatalf("filter policy %q: %v", p, err)
		}
		return v
	}
	want := func(tenant string) map[string]any {
		return map[string]any{"ce-tenant": []any{tenant, map[string]any{"exists": false}}}
	}

	subscribe(driver.AttributeMatch{Name: "tenant", Value: "t1"})
	if p := policy(); fmt.Sprint(p) != fmt.Sprint(want("t1")) {
		t.Fatalf("filter policy %v, want %v", p, want("t1"))
	}
	subscribe(driver.AttributeMatch{Name: "tenant", Value: "t2"})
	subscribe(driver.AttributeMatch{Name: "tenant", Value: "t2"})
	if p := policy(); fmt.Sprint(p) != fmt.Sprint(want("t2")) {
		t.Fatalf("filter policy %v, want %v", p, want("t2"))
	}
	ids := tenantEvents(t, ctx, d, dest, "a", 30, "t1", "t2", "t3")
	if n := queueDepth(t, ctx, raw, queue, len(ids["t2"])); n != len(ids["t2"]) {
		t.Fatalf("the queue holds %d messages, want the %d of tenant t2", n, len(ids["t2"]))
	}
	subscribe()
	if p := policy(); p != nil {
		t.Fatalf("filter policy %v after a subscription without selection, want none", p)
	}
	tenantEvents(t, ctx, d, dest, "b", 30, "t1", "t2", "t3")
	if n := queueDepth(t, ctx, raw, queue, len(ids["t2"])+30); n != len(ids["t2"])+30 {
		t.Fatalf("the queue holds %d messages, want %d", n, len(ids["t2"])+30)
	}
}

// TestBusFilterPushedDown: through the bus, an Exact filter on an
// extension is applied by SNS: the handler receives exactly the matching
// events, and Stats.Filtered counts only the one the Prefix part (which
// runs in the bus) leaves out, because nothing else reached the process.
func TestBusFilterPushedDown(t *testing.T) {
	cfg := testConfig(t)
	ctx := ctxFor(t, 90*time.Second)
	bus := eventbus.New(nil)
	defer bus.Close(context.Background())
	if err := bus.Register("aws", openDriver(t, cfg)); err != nil {
		t.Fatal(err)
	}
	handled := make(chan string, 64)
	filter := eventbus.All(eventbus.Exact("tenant", "acme"), eventbus.Prefix("subject", "orders/"))
	if _, err := bus.SubscribeEvents(ctx, []string{"order.created"}, "acme-billing",
		eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error { handled <- m.ID; return nil }),
		eventbus.WithFilter(filter)); err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	var want []string
	for i := range 50 {
		m, err := eventbus.NewMessage("order.created", map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		tenant := map[bool]string{true: "acme", false: "other"}[i%10 == 0]
		m.ID, m.Extensions = fmt.Sprintf("o%02d-%s", i, tenant), map[string]string{"tenant": tenant}
		m.Subject = "orders/" + m.ID
		switch {
		case i == 10:
			m.Subject = "refunds/" + m.ID // selected by SNS, filtered out by the bus
		case tenant == "acme":
			want = append(want, m.ID)
		}
		if err := bus.PublishEvent(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(got) < len(want) || bus.Stats().Filtered == 0 {
		select {
		case id := <-handled:
			got = append(got, id)
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("handled %v, %d filtered in the bus; want %v and 1", got, bus.Stats().Filtered, want)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("handled %v\nwant    %v", got, want)
	}
	if f := bus.Stats().Filtered; f != 1 {
		t.Errorf("Stats.Filtered = %d, want 1 (only the acme event the Prefix leaves out reached the process)", f)
	}
}
