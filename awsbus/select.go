package awsbus

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"

	"github.com/marty-msf/eventbus/driver"
)

// Attribute selection (driver.SubscribeOptions.Select) on events: the SNS
// subscription of the queue a subscription consumes gets a filter policy
// (scope MessageAttributes) with, for each selected attribute, the key
// ce-<name> and the values [value, {"exists": false}]. A message that carries
// the attribute on its own passes only with the selected value; one that
// carries it in the eventbus attribute (beyond the attribute budget),
// in its body (structured mode) or not at all passes, and the bus filters
// it. See the package documentation, "Attribute selection".

const (
	// maxPolicyKeys is SNS's limit of keys in a filter policy.
	maxPolicyKeys = 5
	// noPolicy removes a subscription's filter policy.
	noPolicy = "{}"
)

// selection is the part of sel the driver applies on dest, sorted by name;
// nil when it applies none: events only; every attribute but partitionkey
// (the key travels in the eventbus attribute), not an empty value, and a
// name's first value when it occurs twice; the first maxPolicyKeys names.
func selection(dest driver.Destination, sel []driver.AttributeMatch) []driver.AttributeMatch {
	if dest.Pattern != driver.Event {
		return nil
	}
	var out []driver.AttributeMatch
	for _, m := range sel {
		if len(out) == maxPolicyKeys {
			break
		}
		if m.Name == "partitionkey" || m.Value == "" ||
			slices.ContainsFunc(out, func(o driver.AttributeMatch) bool { return o.Name == m.Name }) {
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b driver.AttributeMatch) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// filterPolicy is the SNS filter policy of sel (as selection returns it):
// noPolicy when it is empty.
func filterPolicy(sel []driver.AttributeMatch) string {
	if len(sel) == 0 {
		return noPolicy
	}
	p := make(map[string][]any, len(sel))
	for _, m := range sel {
		p[cePrefix+m.Name] = []any{m.Value, map[string]bool{"exists": false}}
	}
	v, _ := marshal(p)
	return v
}

// samePolicy reports whether two filter policies are the same JSON, an
// empty one (no attribute, or "") being noPolicy.
func samePolicy(a, b string) bool {
	var va, vb any
	if a == "" {
		a = noPolicy
	}
	if b == "" {
		b = noPolicy
	}
	if json.Unmarshal([]byte(a), &va) != nil || json.Unmarshal([]byte(b), &vb) != nil {
		return a == b
	}
	return reflect.DeepEqual(va, vb)
}

// applySelection makes the filter policy of the SNS subscription subARN
// the one of sel: it reads the policy and changes it only when it differs,
// so that members subscribing with one filter leave it alone. Changes by
// the members of one group in this process take turns.
func (d *Driver) applySelection(ctx context.Context, subARN string, sel []driver.AttributeMatch) error {
	want := filterPolicy(sel)
	d.selectMu.Lock()
	defer d.selectMu.Unlock()
	out, err := d.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: aws.String(subARN)})
	if err != nil {
		return fmt.Errorf("read filter policy of %s: %w", subARN, classify(err))
	}
	if samePolicy(out.Attributes["FilterPolicy"], want) {
		return nil
	}
	if _, err := d.sns.SetSubscriptionAttributes(ctx, &sns.SetSubscriptionAttributesInput{
		SubscriptionArn: aws.String(subARN), AttributeName: aws.String("FilterPolicy"), AttributeValue: aws.String(want),
	}); err != nil {
		return fmt.Errorf("set filter policy of %s: %w", subARN, classify(err))
	}
	return nil
}
