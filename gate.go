package eventbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/marty-msf/eventbus/driver"
)

// WithFilter delivers to the handler only the messages f matches. The others
// are acked as they arrive — never retried nor dead-lettered — and counted in
// Stats.Filtered. Several WithFilter options all apply. f is compiled when
// the subscription is registered: a malformed filter fails that call with a
// *FilterError. On a stream, filtered-out messages are left out of the
// batches. Query handlers take no filter (a query filtered out would never
// be answered).
//
// The bus evaluates the whole filter after receiving, on every backend.
// Where the backend can select by attribute (its driver claims
// Capabilities.AttributeSelect; the package documentation lists which),
// the Exact filters the whole filter is a conjunction of are also applied
// by the broker, so that a message they leave out never travels to this
// process; everything else of the filter still does.
func WithFilter(f Filter) SubscribeOption {
	return func(o *subscribeOptions) { o.content.filters = append(o.content.filters, f) }
}

// WithPipeline runs every received message through p before the handler:
// the handler runs once for each message p returns, in order, and a message
// for which p returns none is acked. An error of p, or of the handler on any
// of the outputs, follows the handler rules for the received message (retry,
// Permanent → dead letter), so a retried message runs p again and outputs
// handled before the failure are handled again. On a stream, the batch
// handler receives the outputs of every message of the batch. Options.Middleware
// wraps the pipeline: middleware sees the received message. Query handlers
// take no pipeline.
func WithPipeline(p *Pipeline) SubscribeOption {
	return func(o *subscribeOptions) { o.content.pipeline = p }
}

// contentOptions are a subscription's filter, pipeline and schema checks.
type contentOptions struct {
	filters  []Filter
	pipeline *Pipeline
	// gate is what the consumer checks before the handler; nil when there
	// is nothing to check, so that the hot path costs a nil test.
	gate *gate
}

// brokerSelect is the part of the subscription's filter that the driver
// may apply on the broker for dest (see Matcher.brokerSelect).
func (co *contentOptions) brokerSelect(dest driver.Destination) []driver.AttributeMatch {
	if co.gate == nil {
		return nil
	}
	return co.gate.filter.brokerSelect(dest)
}

// gate screens deliveries before their handler.
type gate struct {
	filter  *Matcher
	schemas *Schemas
}

// prepareContent compiles the subscription's filters and wraps each
// registration's handler in its pipeline. It runs before the middleware is
// applied.
func (b *Bus) prepareContent(o *subscribeOptions, regs []*registration) error {
	co := &o.content
	kind := regs[0].kind
	if kind == kindQuery && (len(co.filters) > 0 || co.pipeline != nil) {
		return fmt.Errorf("eventbus: register %s: %w: queries take no filter or pipeline", regs[0].dest.Name, ErrInvalidFilter)
	}
	var g gate
	switch len(co.filters) {
	case 0:
	case 1:
		m, err := compileFilter(co.filters[0])
		if err != nil {
			return fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, err)
		}
		g.filter = m
	default:
		m, err := compileFilter(All(co.filters...))
		if err != nil {
			return fmt.Errorf("eventbus: register %s: %w", regs[0].dest.Name, err)
		}
		g.filter = m
	}
	if g.filter != nil && g.filter.root == nil {
		g.filter = nil // the zero Filter
	}
	if kind != kindQuery {
		g.schemas = b.opts.Schemas
	}
	if g.filter != nil || g.schemas != nil {
		co.gate = &g
	}
	if p := co.pipeline; p != nil && len(p.steps) > 0 {
		for _, r := range regs {
			if r.handler != nil {
				r.handler = p.wrapHandler(r.handler)
			}
			if r.batch != nil {
				r.batch = p.wrapBatch(r.batch)
			}
		}
	}
	return nil
}

// admit screens d before its handler: it reports true when the handler is
// to run, and otherwise has settled d itself — acked when filtered out,
// dead-lettered when its data violates its schema, nacked for a retry when
// its schema could not be loaded.
func (c *consumer) admit(g *gate, d *driver.Delivery) bool {
	if g.filter != nil && !g.filter.root.match(d.Message) {
		c.bus.stats.filtered.Add(1)
		c.settle(d, opAck)
		return false
	}
	if g.schemas != nil {
		if err := g.schemas.validate(d.Message, false); err != nil {
			var se *SchemaError
			if errors.As(err, &se) && len(se.Violations) > 0 {
				c.deadLetter([]*driver.Delivery{d}, err)
			} else {
				c.fail([]*driver.Delivery{d}, err)
			}
			return false
		}
	}
	return true
}

// regRoute is how a registration's backends are chosen besides the router:
// a bridge pins its source backend, and content routes add backends that
// messages of the destination may be routed to.
type regRoute struct {
	pinned string     // backend name a bridge consumes from, or ""
	extra  []*backend // further backends to consume from (content routes)
	to     string     // a bridge's target backend name
	toBe   *backend
}

// resolveReg returns the backend of r: its pinned one, or the router's.
func (rt *router) resolveReg(r *registration) (*backend, error) {
	if r.route.pinned == "" {
		return rt.resolve(r.dest)
	}
	be := rt.byName[r.route.pinned]
	if be == nil {
		return nil, fmt.Errorf("bridge from %w %q", ErrUnknownBackend, r.route.pinned)
	}
	if err := patternCapable(be, r.dest.Pattern); err != nil {
		return nil, fmt.Errorf("bridge from %s: %w", be.name, err)
	}
	return be, nil
}

// bindContent completes the binding of r once its main backend is known: a
// bridge's target, and the further backends content routes may send r's
// messages to. It returns the problems found.
func (rt *router) bindContent(r *registration) []error {
	var problems []error
	r.route.extra = nil
	if r.route.to != "" {
		be := rt.byName[r.route.to]
		switch {
		case be == nil:
			problems = append(problems, fmt.Errorf("%s: bridge to %w %q", r.dest.Name, ErrUnknownBackend, r.route.to))
		case be == r.backend:
			problems = append(problems, fmt.Errorf("%s: bridge: source and target are both backend %q", r.dest.Name, be.name))
		default:
			if err := patternCapable(be, r.dest.Pattern); err != nil {
				problems = append(problems, fmt.Errorf("%s: bridge to %s: %w", r.dest.Name, be.name, err))
			}
			r.route.toBe = be
		}
	}
	if r.route.pinned != "" || rt.content == nil || r.kind == kindQuery {
		return problems
	}
	plan, err := rt.plan(r.dest)
	if err != nil {
		return append(problems, fmt.Errorf("%s: %w", r.dest.Name, err))
	}
	for _, ch := range plan.choices {
		if ch.be == r.backend || containsBackend(r.route.extra, ch.be) {
			continue
		}
		if err := checkCapabilities(ch.be, r); err != nil {
			problems = append(problems, fmt.Errorf("%s: %w", r.dest.Name, err))
			continue
		}
		r.route.extra = append(r.route.extra, ch.be)
	}
	return problems
}

func containsBackend(bes []*backend, be *backend) bool {
	for _, b := range bes {
		if b == be {
			return true
		}
	}
	return false
}

// open subscribes r on its backend, and, when content routes may send its
// messages elsewhere too, on each of those, merged into one subscription.
func (r *registration) open(ctx context.Context) (driver.Subscription, error) {
	opts := r.subscribeOptions()
	if len(r.route.extra) == 0 {
		return r.backend.drv.Subscribe(ctx, r.dest, opts)
	}
	subs := make([]driver.Subscription, 0, 1+len(r.route.extra))
	for _, be := range append([]*backend{r.backend}, r.route.extra...) {
		o := opts
		o.Durable = r.durable && be.caps.Durable
		sub, err := be.drv.Subscribe(ctx, r.dest, o)
		if err != nil {
			for _, s := range subs {
				_ = s.Close(context.WithoutCancel(ctx))
			}
			return nil, fmt.Errorf("on %s: %w", be.name, err)
		}
		subs = append(subs, sub)
	}
	return newFanIn(subs), nil
}
