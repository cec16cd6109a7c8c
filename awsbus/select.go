package awsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/smithy-go"

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
	// maxPolicySize is SNS's limit of a filter policy's size in bytes.
	maxPolicySize = 256 * 1024
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

// FilterPolicyError is returned by Subscribe when SNS refused the filter
// policy of a selection and the removal of the policy in place, which may
// deliver less than the selection allows (a narrower policy of an earlier
// member of the group): the subscription would miss events its filter
// matches. Err holds SNS's refusals.
type FilterPolicyError struct {
	Subscription string // the SNS subscription's ARN
	Policy       string // the policy of the selection
	Err          error
}

func (e *FilterPolicyError) Error() string {
	return fmt.Sprintf("the filter policy of SNS subscription %s can be neither set to the selection's nor removed, and the policy in place may deliver less than the selection allows: %v",
		e.Subscription, e.Err)
}

func (e *FilterPolicyError) Unwrap() error { return e.Err }

// denied reports whether err is a refusal for lack of permission.
func denied(err error) bool {
	switch apiCode(err) {
	case "AuthorizationError", "AccessDenied", "AccessDeniedException":
		return true
	}
	return false
}

// answered reports whether SNS answered err (a refusal), rather than the
// network or the context failing the call.
func answered(err error) bool {
	var api smithy.APIError
	return errors.As(err, &api)
}

// deliversAll reports whether an SNS subscription with the attributes attrs
// delivers every event that the policy of sel (as selection returns it)
// lets through: it has no policy, or one on message attributes whose every
// key is ce-<name> of a selected attribute and lets through both the
// selected value and the attribute's absence.
func deliversAll(attrs map[string]string, sel []driver.AttributeMatch) bool {
	policy := attrs["FilterPolicy"]
	if samePolicy(policy, noPolicy) {
		return true
	}
	if scope := attrs["FilterPolicyScope"]; scope != "" && scope != "MessageAttributes" {
		return false
	}
	var p map[string]any
	if json.Unmarshal([]byte(policy), &p) != nil {
		return false
	}
	for key, conds := range p {
		name, ok := strings.CutPrefix(key, cePrefix)
		i := slices.IndexFunc(sel, func(m driver.AttributeMatch) bool { return m.Name == name })
		list, isList := conds.([]any)
		if !ok || i < 0 || !isList ||
			!slices.Contains(list, any(sel[i].Value)) ||
			!slices.ContainsFunc(list, func(c any) bool { return reflect.DeepEqual(c, map[string]any{"exists": false}) }) {
			return false
		}
	}
	return true
}

// applySelection makes the filter policy of the SNS subscription subARN
// the one of sel: it reads the policy and changes it only when it differs,
// so that members subscribing with one filter leave it alone; fresh says
// that the subscription was just made without one (no read). Changes by
// the members of one group in this process take turns.
//
// The selection is an optimisation, so a refusal is no failure as long as
// the subscription delivers all that sel allows: when SNS refuses the
// policy (its limits: size, 200 policies per topic...), the policy in place
// stays if it lets through all that sel does, else it is removed; only
// when that is refused too does applySelection fail, with a
// *FilterPolicyError. Without the permission to read the policy, an empty
// selection leaves the subscription as it is (with a warning).
func (d *Driver) applySelection(ctx context.Context, subARN string, sel []driver.AttributeMatch, fresh bool) error {
	want := filterPolicy(sel)
	d.selectMu.Lock()
	defer d.selectMu.Unlock()
	var cur map[string]string // nil: unknown
	if fresh {
		cur = map[string]string{}
	} else {
		out, err := d.sns.GetSubscriptionAttributes(ctx, &sns.GetSubscriptionAttributesInput{SubscriptionArn: aws.String(subARN)})
		switch {
		case err == nil:
			cur = out.Attributes
		case !denied(err):
			return fmt.Errorf("read filter policy of %s: %w", subARN, classify(err))
		case len(sel) == 0:
			d.log.Warn("awsbus: no permission to read the filter policy of the SNS subscription; it stays as it is (a policy set earlier narrows what the queue gets)",
				"subscription", subARN, "err", err)
			return nil
		}
		if cur != nil && samePolicy(cur["FilterPolicy"], want) {
			return nil
		}
	}
	var refused []error
	if len(want) > maxPolicySize {
		refused = append(refused, fmt.Errorf("filter policy of %d bytes: SNS's limit is %d", len(want), maxPolicySize))
	} else {
		err := d.setFilterPolicy(ctx, subARN, want)
		if err == nil {
			return nil
		}
		if !answered(err) {
			return fmt.Errorf("set filter policy of %s: %w", subARN, classify(err))
		}
		refused = append(refused, err)
	}
	if want != noPolicy {
		if cur != nil && deliversAll(cur, sel) {
			d.log.Warn("awsbus: filter policy refused; the SNS subscription keeps the one it has (the bus filters what it lets through)",
				"subscription", subARN, "err", refused[0])
			return nil
		}
		err := d.setFilterPolicy(ctx, subARN, noPolicy)
		if err == nil {
			d.log.Warn("awsbus: filter policy refused; the SNS subscription has none now (the bus filters every event)",
				"subscription", subARN, "err", refused[0])
			return nil
		}
		if !answered(err) {
			return fmt.Errorf("remove filter policy of %s: %w", subARN, classify(err))
		}
		refused = append(refused, err)
	}
	return &FilterPolicyError{Subscription: subARN, Policy: want, Err: errors.Join(refused...)}
}

func (d *Driver) setFilterPolicy(ctx context.Context, subARN, policy string) error {
	_, err := d.sns.SetSubscriptionAttributes(ctx, &sns.SetSubscriptionAttributesInput{
		SubscriptionArn: aws.String(subARN), AttributeName: aws.String("FilterPolicy"), AttributeValue: aws.String(policy),
	})
	return err
}
