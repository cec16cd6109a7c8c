package eventbus

import (
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// Route sends a pattern's destinations to a backend.
//
// Match is a glob (path.Match syntax: '*', '?', '[...]') over the destination
// name without its pattern prefix: the event type for events and broadcasts
// ("order.*"), "<service>.<type>" for commands and queries ("billing.*"), the
// stream name for streams. An empty Match matches everything. A zero Pattern
// matches every pattern.
//
// Filter, when not zero, makes a content route: it also has to match the
// message (attributes, CESQL over attributes and data; see Filter), which is
// then published to Backend, while the destination's other messages take the
// next route that applies. Subscribers of such a destination consume from
// every backend its routes may choose. Queries are not routed by content.
// Pipeline, when set, transforms the messages the route places before they
// are sent (see Pipeline); its outputs go to the same destination and
// backend.
//
// Delivery is the delivery guarantee of the destinations the route places
// (zero: AtLeastOnce); Start refuses one the backend cannot give. See
// DeliveryGuarantee.
type Route struct {
	Pattern  Pattern
	Match    string
	Backend  string
	Filter   Filter
	Pipeline *Pipeline
	Delivery DeliveryGuarantee
}

func (r Route) String() string {
	p := "any pattern"
	if r.Pattern != 0 {
		p = r.Pattern.String()
	}
	m := r.Match
	if m == "" {
		m = "*"
	}
	return fmt.Sprintf("route %s %q → %s", p, m, r.Backend)
}

// selectionMatrix is the default placement when several backends are
// registered and no route decides: for each pattern, the brokers best suited
// to it, by driver name, in order of preference.
var selectionMatrix = map[driver.Pattern][]string{
	driver.Event:     {"nats", "aws", "sns"},
	driver.Command:   {"rabbitmq", "aws", "sqs"},
	driver.Query:     {"nats", "rabbitmq"},
	driver.Stream:    {"kafka", "nats"},
	driver.Broadcast: {"nats", "redis"},
}

type router struct {
	routes   []Route
	byName   map[string]*backend
	backends []*backend
	fallback *backend
	cache    sync.Map // destination name → *backend
	content  *contentRouting
	// exactlyOnce: a route is exactly-once; dedup then caches, per
	// destination name, whether its publishes are de-duplicated.
	exactlyOnce bool
	dedup       sync.Map
}

func newRouter(routes []Route, def string, backends []*backend, byName map[string]*backend) (*router, []error) {
	var problems []error
	rt := &router{routes: routes, byName: byName, backends: backends}
	problems = append(problems, rt.compileContent()...)
	for _, r := range routes {
		rt.exactlyOnce = rt.exactlyOnce || r.Delivery == ExactlyOnce
		be := byName[r.Backend]
		if be == nil {
			problems = append(problems, fmt.Errorf("%s: %w %q", r, ErrUnknownBackend, r.Backend))
			continue
		}
		if _, err := path.Match(r.Match, ""); err != nil {
			problems = append(problems, fmt.Errorf("%s: bad glob: %w", r, err))
		}
		if r.Pattern != 0 {
			if !userPattern(r.Pattern) {
				problems = append(problems, fmt.Errorf("%s: not a messaging pattern", r))
			} else if err := patternCapable(be, r.Pattern); err != nil {
				problems = append(problems, fmt.Errorf("%s: %w", r, err))
			}
		}
	}
	if def != "" {
		rt.fallback = byName[def]
		if rt.fallback == nil {
			problems = append(problems, fmt.Errorf("default backend: %w %q", ErrUnknownBackend, def))
		}
	}
	return rt, problems
}

func userPattern(p Pattern) bool {
	for _, q := range driver.Patterns() {
		if p == q {
			return true
		}
	}
	return false
}

// patternCapable reports what be lacks to serve pattern p at all.
func patternCapable(be *backend, p Pattern) error {
	c := be.caps
	var missing []string
	if !c.Serves(p) {
		missing = append(missing, "pattern "+p.String())
	}
	switch p {
	case driver.Stream:
		if !c.Durable {
			missing = append(missing, "Durable")
		}
		if !c.ConsumerGroups {
			missing = append(missing, "ConsumerGroups")
		}
		if !c.OrderingByKey {
			missing = append(missing, "OrderingByKey")
		}
	case driver.Command, driver.Query:
		if !c.ConsumerGroups {
			missing = append(missing, "ConsumerGroups")
		}
	case driver.Broadcast:
	}
	if p == driver.Query && be.rr == nil && !c.Serves(driver.Reply) {
		missing = append(missing, "NativeRequestReply or pattern reply")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: backend %q (%s) lacks %s", ErrCapability, be.name, c.Name, strings.Join(missing, ", "))
	}
	return nil
}

// resolve returns the backend serving dest: the first matching route, else
// the selection matrix, else the default backend, else the first registered
// backend able to serve the pattern.
func (rt *router) resolve(dest driver.Destination) (*backend, error) {
	if v, ok := rt.cache.Load(dest.Name); ok {
		return v.(*backend), nil
	}
	be, err := rt.resolveSlow(dest)
	if err != nil {
		return nil, err
	}
	rt.cache.Store(dest.Name, be)
	return be, nil
}

func (rt *router) resolveSlow(dest driver.Destination) (*backend, error) {
	rel := strings.TrimPrefix(dest.Name, dest.Pattern.Prefix()+".")
	for _, r := range rt.routes {
		if r.Filter.IsZero() && routeApplies(r, dest, rel) {
			return rt.routeBackend(r, dest)
		}
	}
	if len(rt.backends) > 1 {
		for _, name := range selectionMatrix[dest.Pattern] {
			for _, be := range rt.backends {
				if be.caps.Name == name && patternCapable(be, dest.Pattern) == nil {
					return be, nil
				}
			}
		}
	}
	if rt.fallback != nil && patternCapable(rt.fallback, dest.Pattern) == nil {
		return rt.fallback, nil
	}
	var why []string
	for _, be := range rt.backends {
		err := patternCapable(be, dest.Pattern)
		if err == nil {
			return be, nil
		}
		why = append(why, err.Error())
	}
	return nil, fmt.Errorf("%w for pattern %s (%s)", ErrNoBackend, dest.Pattern, strings.Join(why, "; "))
}

// checkCapabilities reports what a registration needs beyond its pattern.
// Its error, like resolve's, does not name the destination: the caller does.
func checkCapabilities(be *backend, r *registration) error {
	c := be.caps
	if r.group != "" && !c.ConsumerGroups {
		return fmt.Errorf("group %q: %w: backend %q (%s) lacks ConsumerGroups", r.group, ErrCapability, be.name, c.Name)
	}
	if r.opts.startAt == driver.StartFirst && !c.Durable {
		return fmt.Errorf("%w: StartFirst needs a Durable backend, %q (%s) is not", ErrCapability, be.name, c.Name)
	}
	return nil
}
