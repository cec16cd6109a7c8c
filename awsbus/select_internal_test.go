package awsbus

import (
	"slices"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

// TestSelection: events only; partitionkey (which travels in the eventbus
// attribute), empty values and a name's second value are left out, and
// SNS's five keys at most are kept, sorted by name.
func TestSelection(t *testing.T) {
	ev := driver.NewDestination(driver.Event, "order", "created")
	sel := []driver.AttributeMatch{
		{Name: "tenant", Value: "acme"}, {Name: "partitionkey", Value: "k"}, {Name: "empty", Value: ""},
		{Name: "tenant", Value: "other"}, {Name: "source", Value: "/shop"}, {Name: "a", Value: "1"},
		{Name: "b", Value: "2"}, {Name: "c", Value: "3"}, {Name: "d", Value: "4"},
	}
	want := []driver.AttributeMatch{{Name: "a", Value: "1"}, {Name: "b", Value: "2"}, {Name: "c", Value: "3"},
		{Name: "source", Value: "/shop"}, {Name: "tenant", Value: "acme"}}
	if got := selection(ev, sel); !slices.Equal(got, want) {
		t.Errorf("selection %v\nwant %v", got, want)
	}
	for _, p := range []driver.Pattern{driver.Command, driver.Broadcast, driver.Stream} {
		if got := selection(driver.NewDestination(p, "order", "created"), sel); got != nil {
			t.Errorf("%s: selection %v, want none", p, got)
		}
	}
	if p := filterPolicy(want[3:]); p != `{"ce-source":["/shop",{"exists":false}],"ce-tenant":["acme",{"exists":false}]}` {
		t.Errorf("filter policy %s", p)
	}
	if p := filterPolicy(nil); p != noPolicy {
		t.Errorf("empty selection: filter policy %s, want %s", p, noPolicy)
	}
	for _, same := range [][2]string{{"", "{}"}, {`{"a":["x"],"b":["y"]}`, `{ "b": ["y"], "a": ["x"] }`}} {
		if !samePolicy(same[0], same[1]) {
			t.Errorf("%s and %s differ", same[0], same[1])
		}
	}
	if samePolicy(`{"a":["x"]}`, `{"a":["y"]}`) || samePolicy("", `{"a":["x"]}`) {
		t.Error("different policies are the same")
	}
}

// TestDeliversAll: a policy in place is kept, when the selection's is
// refused, only if it lets through every event the selection allows.
func TestDeliversAll(t *testing.T) {
	sel := []driver.AttributeMatch{{Name: "subject", Value: "s"}, {Name: "tenant", Value: "acme"}}
	for _, c := range []struct {
		policy, scope string
		want          bool
	}{
		{"", "", true},
		{"{}", "", true},
		{filterPolicy(sel), "", true},
		{filterPolicy(sel[1:]), "MessageAttributes", true},
		{`{"ce-tenant":["other","acme",{"exists":false}]}`, "", true},
		{filterPolicy(sel[1:]), "MessageBody", false},
		{`{"ce-tenant":["acme"]}`, "", false},
		{`{"ce-tenant":["other",{"exists":false}]}`, "", false},
		{`{"ce-source":["/s",{"exists":false}]}`, "", false},
		{`{"$or":[{"ce-tenant":["acme"]}]}`, "", false},
		{`not json`, "", false},
	} {
		attrs := map[string]string{"FilterPolicy": c.policy, "FilterPolicyScope": c.scope}
		if got := deliversAll(attrs, sel); got != c.want {
			t.Errorf("deliversAll(%s, scope %q) = %v, want %v", c.policy, c.scope, got, c.want)
		}
	}
}
