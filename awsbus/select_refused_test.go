package awsbus_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
)

// refusing returns a copy of cfg whose SDK clients answer, without asking
// fauxqs, the calls refuse returns an error for, as SNS answers what
// fauxqs does not enforce: its limit of 200 filter policies per topic, or
// IAM permissions.
func refusing(t *testing.T, cfg *awsbus.Config, refuse func(params any) error) *awsbus.Config {
	t.Helper()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	c := *cfg
	c.AccessKeyID, c.SecretAccessKey = "", ""
	c.AWSConfig = &aws.Config{
		Region:      "us-east-1",
		Credentials: credentials.NewStaticCredentialsProvider("test", "test", ""),
		HTTPClient:  &http.Client{Transport: tr},
		APIOptions: []func(*middleware.Stack) error{func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("refuse",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					if err := refuse(in.Parameters); err != nil {
						return middleware.InitializeOutput{}, middleware.Metadata{}, err
					}
					return next.HandleInitialize(ctx, in)
				}), middleware.Before)
		}},
	}
	return &c
}

// policyLimit refuses every filter policy but none, as SNS does once a
// topic has 200 subscriptions with one.
func policyLimit(params any) error {
	if in, ok := params.(*sns.SetSubscriptionAttributesInput); ok &&
		aws.ToString(in.AttributeName) == "FilterPolicy" && aws.ToString(in.AttributeValue) != "{}" {
		return &smithy.GenericAPIError{Code: "FilterPolicyLimitExceeded", Message: "Filter policy limit exceeded"}
	}
	return nil
}

// noPolicyChange refuses every change of a filter policy.
func noPolicyChange(params any) error {
	if in, ok := params.(*sns.SetSubscriptionAttributesInput); ok && aws.ToString(in.AttributeName) == "FilterPolicy" {
		return &smithy.GenericAPIError{Code: "InvalidParameter", Message: "Invalid parameter: FilterPolicy"}
	}
	return nil
}

// TestSelectionRefused: when SNS refuses a subscription's filter policy,
// Subscribe succeeds all the same and the handlers get exactly the events
// their filter matches (the bus filters them): a private subscription
// with no policy, and a group whose narrower policy of an earlier member
// (which would keep out what the new filter matches) is removed.
func TestSelectionRefused(t *testing.T) {
	cfg, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "created")
	narrowedGroup(t, ctx, d, dest, "billing")

	bus := eventbus.New(nil)
	defer bus.Close(context.Background())
	if err := bus.Register("aws", openDriver(t, refusing(t, cfg, policyLimit))); err != nil {
		t.Fatal(err)
	}
	handled := map[string]chan string{"billing": make(chan string, 64), "": make(chan string, 64)}
	for group, ch := range handled {
		if _, err := bus.SubscribeEvents(ctx, []string{"order.created"}, group,
			eventbus.HandlerFunc(func(_ context.Context, m *eventbus.Message) error { ch <- m.ID; return nil }),
			eventbus.WithFilter(eventbus.Exact("tenant", "acme"))); err != nil {
			t.Fatalf("subscribe group %q: %v", group, err)
		}
	}
	if err := bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	queue, err := d.QueueURL(ctx, dest, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if p := filterPolicyOf(t, ctx, d, raw, dest, queue); p != "" {
		t.Errorf("the group's filter policy is %s, want none", p)
	}
	ids := tenantEvents(t, ctx, d, dest, "a", 30, "acme", "other", "t3")
	for group, ch := range handled {
		if got := collect(t, ctx, ch, len(ids["acme"])); !slices.Equal(got, ids["acme"]) {
			t.Errorf("group %q handled %v\nwant %v", group, got, ids["acme"])
		}
	}
}

// narrowedGroup subscribes group to dest with the selection of tenant
// "other" and closes the subscription: the group's queue stays, with a
// filter policy narrower than any other tenant's selection.
func narrowedGroup(t *testing.T, ctx context.Context, d *awsbus.Driver, dest driver.Destination, group string) {
	t.Helper()
	setSelection(t, ctx, d, dest, driver.SubscribeOptions{Group: group,
		Select: []driver.AttributeMatch{{Name: "tenant", Value: "other"}}})
}

// everyID is every id of ids, sorted.
func everyID(ids map[string][]string) []string {
	var all []string
	for _, v := range ids {
		all = append(all, v...)
	}
	slices.Sort(all)
	return all
}

// collect receives n ids from ch, checks that no more come within a
// second, and returns them sorted.
func collect(t *testing.T, ctx context.Context, ch <-chan string, n int) []string {
	t.Helper()
	var got []string
	for len(got) < n {
		select {
		case id := <-ch:
			got = append(got, id)
		case <-ctx.Done():
			t.Fatalf("received %v, want %d", got, n)
		}
	}
	select {
	case id := <-ch:
		got = append(got, id)
	case <-time.After(time.Second):
	}
	slices.Sort(got)
	return got
}

// TestSelectionOversize: a selection whose filter policy is over SNS's
// 256 KiB (fauxqs refuses it too) is not sent: a group whose earlier
// member left a narrower policy gets none, and its queue receives every
// event, among them all that the selection allows; a private subscription
// is made without one.
func TestSelectionOversize(t *testing.T) {
	_, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "shipped")
	narrowedGroup(t, ctx, d, dest, "g")
	huge := []driver.AttributeMatch{{Name: "tenant", Value: "acme"}, {Name: "blob", Value: strings.Repeat("x", 300<<10)}}
	sub, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Select: huge})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	private, err := d.Subscribe(ctx, dest, driver.SubscribeOptions{Select: huge})
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close(ctx)
	queue, err := d.QueueURL(ctx, dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	if p := filterPolicyOf(t, ctx, d, raw, dest, queue); p != "" {
		t.Errorf("the group's filter policy is %s, want none", p)
	}
	all := everyID(tenantEvents(t, ctx, d, dest, "a", 20, "acme", "other"))
	expectIDs(t, ctx, all, map[string]driver.Subscription{"group": sub, "private subscription": private})
}

// TestSelectionUnchangeable: when SNS refuses every change of the filter
// policy, a group whose policy delivers all that the new selection allows
// keeps it, a private subscription has none, and a group whose policy is
// narrower makes Subscribe fail with a *FilterPolicyError rather than
// miss events.
func TestSelectionUnchangeable(t *testing.T) {
	cfg, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "paid")
	acme := driver.AttributeMatch{Name: "tenant", Value: "acme"}
	setSelection(t, ctx, d, dest, driver.SubscribeOptions{Group: "g", Select: []driver.AttributeMatch{acme}})
	queue, err := d.QueueURL(ctx, dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	before := filterPolicyOf(t, ctx, d, raw, dest, queue)

	stuck := openDriver(t, refusing(t, cfg, noPolicyChange))
	wider := []driver.AttributeMatch{acme, {Name: "subject", Value: "s"}}
	setSelection(t, ctx, stuck, dest, driver.SubscribeOptions{Group: "g", Select: wider})
	if p := filterPolicyOf(t, ctx, d, raw, dest, queue); p != before {
		t.Errorf("filter policy %s, want the one in place, %s", p, before)
	}
	private, err := stuck.Subscribe(ctx, dest, driver.SubscribeOptions{Select: wider})
	if err != nil {
		t.Fatal(err)
	}
	defer private.Close(ctx)
	all := everyID(tenantEvents(t, ctx, d, dest, "a", 4, "acme", "other"))
	expectIDs(t, ctx, all, map[string]driver.Subscription{"private subscription": private})

	for _, sel := range [][]driver.AttributeMatch{{{Name: "tenant", Value: "other"}}, nil} {
		_, err = stuck.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Select: sel})
		var fpe *awsbus.FilterPolicyError
		if !errors.As(err, &fpe) {
			t.Fatalf("Subscribe with selection %v over a narrower policy: %v, want a *FilterPolicyError", sel, err)
		}
		if !strings.Contains(err.Error(), fpe.Subscription) {
			t.Errorf("error %q does not name the subscription", err)
		}
	}
}

// TestSelectionWithoutPermissions: a role allowed neither to read nor to
// change subscription attributes (as before attribute selection) still
// subscribes a group without a selection, and receives its events.
func TestSelectionWithoutPermissions(t *testing.T) {
	cfg, d, _, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "refunded")
	leastPrivilege := openDriver(t, refusing(t, cfg, func(params any) error {
		switch params.(type) {
		case *sns.GetSubscriptionAttributesInput, *sns.SetSubscriptionAttributesInput, *sns.ListSubscriptionsByTopicInput:
			return &smithy.GenericAPIError{Code: "AuthorizationError", Message: "not authorized", Fault: smithy.FaultClient}
		}
		return nil
	}))
	sub, err := leastPrivilege.Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g", Durable: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	all := everyID(tenantEvents(t, ctx, d, dest, "a", 6, "acme", "other"))
	expectIDs(t, ctx, all, map[string]driver.Subscription{"group": sub})
}

// TestExistingSubscriptionWithoutRawDelivery: a group queue's SNS
// subscription found without raw message delivery (turned off by hand)
// gets it back when a member subscribes, so that the member reads the
// events rather than SNS's JSON notifications.
func TestExistingSubscriptionWithoutRawDelivery(t *testing.T) {
	cfg, d, raw, ctx := selectEnv(t)
	dest := driver.NewDestination(driver.Event, "order", "returned")
	queue, err := d.QueueURL(ctx, dest, "g")
	if err != nil {
		t.Fatal(err)
	}
	subARN := subscriptionOf(t, ctx, d, raw, dest, queue)
	if _, err := raw.sns.SetSubscriptionAttributes(ctx, &sns.SetSubscriptionAttributesInput{SubscriptionArn: aws.String(subARN),
		AttributeName: aws.String("RawMessageDelivery"), AttributeValue: aws.String("false")}); err != nil {
		t.Fatal(err)
	}
	sub, err := openDriver(t, cfg).Subscribe(ctx, dest, driver.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close(ctx)
	out, err := raw.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: aws.String(subARN)})
	if err != nil {
		t.Fatal(err)
	}
	if v := out.Attributes["RawMessageDelivery"]; v != "true" {
		t.Errorf("RawMessageDelivery = %q, want true", v)
	}
	all := everyID(tenantEvents(t, ctx, d, dest, "a", 3, "acme"))
	expectIDs(t, ctx, all, map[string]driver.Subscription{"group": sub})
}
