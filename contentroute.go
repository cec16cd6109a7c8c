package eventbus

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/marty-msf/eventbus/driver"
)

// contentRouting is the part of a router that looks at messages: routes
// with a Filter or a Pipeline. A router without such routes has none, and
// publishing then costs what it did before.
type contentRouting struct {
	matchers []*Matcher // per route, nil for a route without Filter
	plans    sync.Map   // destination name → *routePlan
}

// routePlan is where a destination's messages go: the first content route
// whose filter matches, else the backend (and pipeline) of the first plain
// route or the default placement.
type routePlan struct {
	choices  []routeChoice
	fallback *backend
	pipeline *Pipeline
}

type routeChoice struct {
	match    *Matcher
	be       *backend
	pipeline *Pipeline
}

// compileContent compiles the routes' filters; it returns the problems.
func (rt *router) compileContent() []error {
	var problems []error
	var cr contentRouting
	used := false
	cr.matchers = make([]*Matcher, len(rt.routes))
	for i, r := range rt.routes {
		if r.Pipeline != nil {
			used = true
		}
		if r.Filter.IsZero() {
			continue
		}
		used = true
		if r.Pattern == driver.Query {
			problems = append(problems, fmt.Errorf("%s: %w: queries are not routed by content", r, ErrInvalidFilter))
			continue
		}
		m, err := compileFilter(r.Filter)
		if err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", r, err))
			continue
		}
		cr.matchers[i] = m
	}
	if used {
		rt.content = &cr
	}
	return problems
}

// routeApplies reports whether r covers dest, whose name without its
// pattern prefix is rel.
func routeApplies(r Route, dest driver.Destination, rel string) bool {
	if r.Pattern != 0 && r.Pattern != dest.Pattern {
		return false
	}
	if r.Match != "" {
		if ok, _ := path.Match(r.Match, rel); !ok {
			return false
		}
	}
	return true
}

// routeBackend returns the backend of route r for dest, able to serve it.
func (rt *router) routeBackend(r Route, dest driver.Destination) (*backend, error) {
	be := rt.byName[r.Backend]
	if be == nil {
		return nil, fmt.Errorf("%s: %w %q", r, ErrUnknownBackend, r.Backend)
	}
	if err := patternCapable(be, dest.Pattern); err != nil {
		return nil, fmt.Errorf("%s: %w", r, err)
	}
	return be, nil
}

// plan returns the route plan of dest. rt.content is not nil.
func (rt *router) plan(dest driver.Destination) (*routePlan, error) {
	if v, ok := rt.content.plans.Load(dest.Name); ok {
		return v.(*routePlan), nil
	}
	fallback, err := rt.resolve(dest)
	if err != nil {
		return nil, err
	}
	p := &routePlan{fallback: fallback}
	rel := strings.TrimPrefix(dest.Name, dest.Pattern.Prefix()+".")
	for i, r := range rt.routes {
		if !routeApplies(r, dest, rel) {
			continue
		}
		m := rt.content.matchers[i]
		if r.Filter.IsZero() {
			p.pipeline = r.Pipeline // the route resolve chose
			break
		}
		if m == nil || dest.Pattern == driver.Query || dest.Pattern == driver.Reply {
			continue
		}
		be, err := rt.routeBackend(r, dest)
		if err != nil {
			return nil, err
		}
		p.choices = append(p.choices, routeChoice{match: m, be: be, pipeline: r.Pipeline})
	}
	rt.content.plans.Store(dest.Name, p)
	return p, nil
}

// pick returns the backend and pipeline of m.
func (p *routePlan) pick(m *Message) (*backend, *Pipeline) {
	for _, c := range p.choices {
		if c.match.Match(m) {
			return c.be, c.pipeline
		}
	}
	return p.fallback, p.pipeline
}

// screensPublish reports whether publishing must go through
// publishContent: content routes, route pipelines or schemas.
func (b *Bus) screensPublish() bool {
	if b.opts.Schemas != nil {
		return true
	}
	rt := b.routes.Load()
	return rt != nil && rt.content != nil
}

// publishContent publishes msgs to dest through content routes, route
// pipelines and schema checks. Each message goes to the backend its route
// chooses; a pipeline's outputs go to the same destination and backend.
// Outputs after the first that kept the input's ID get a new one. Messages
// for one backend are sent in one batch, in order; nothing is sent when a
// pipeline or a schema check fails.
func (b *Bus) publishContent(ctx context.Context, dest driver.Destination, msgs []*Message) error {
	if b.closed.Load() {
		return fmt.Errorf("eventbus: publish %s: %w", dest.Name, ErrClosed)
	}
	rt := b.routes.Load()
	if rt == nil {
		return fmt.Errorf("eventbus: publish %s: %w", dest.Name, ErrNotStarted)
	}
	var plan *routePlan
	if rt.content != nil {
		var err error
		if plan, err = rt.plan(dest); err != nil {
			return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
		}
	} else {
		be, err := rt.resolve(dest)
		if err != nil {
			return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
		}
		plan = &routePlan{fallback: be}
	}
	type group struct {
		be   *backend
		msgs []*Message
	}
	var groups []group
	add := func(be *backend, m *Message) {
		for i := range groups {
			if groups[i].be == be {
				groups[i].msgs = append(groups[i].msgs, m)
				return
			}
		}
		groups = append(groups, group{be: be, msgs: []*Message{m}})
	}
	for _, m := range msgs {
		b.fill(m)
		be, pipe := plan.pick(m)
		outs := []*Message{m}
		if pipe != nil {
			var err error
			if outs, err = pipe.apply(ctx, m); err != nil {
				return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
			}
			for i, o := range outs {
				if i > 0 && o.ID == m.ID {
					o.ID = ""
				}
				if err := checkMessage(o); err != nil {
					return fmt.Errorf("eventbus: publish %s: pipeline output: %w", dest.Name, err)
				}
				b.fill(o)
			}
		}
		for _, o := range outs {
			if b.opts.Schemas != nil {
				if err := b.opts.Schemas.validate(o, true); err != nil {
					return fmt.Errorf("eventbus: publish %s: %w", dest.Name, err)
				}
			}
			add(be, o)
		}
	}
	var errs []error
	for _, g := range groups {
		if err := b.send(ctx, g.be, dest, g.msgs); err != nil {
			errs = append(errs, fmt.Errorf("eventbus: publish %s via %s: %w", dest.Name, g.be.name, err))
		}
	}
	return errors.Join(errs...)
}
