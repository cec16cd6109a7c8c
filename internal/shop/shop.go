// Package shop is the online shop of the order saga that examples/ecommerce
// and the eventbus command's demo run: the saga's definition, its data and
// the inventory, payment and shipping services that take part in it.
//
// An order reserves inventory, authorizes the payment and arranges shipping;
// a declined payment or missing stock fails the saga, and the steps that took
// effect are compensated (the reservation released, the authorization
// voided). The services keep their state in memory, in one Shop, so that a
// program can check the business outcome: a completed order moved stock into
// a reservation and held the money, a compensated one left everything as it
// was. A Shop is safe for concurrent use.
package shop

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/saga"
)

// SagaName is the name of the order saga's definition.
const SagaName = "order"

// Step names of the order saga, in order.
const (
	StepReserve   = "reserve-inventory"
	StepAuthorize = "authorize-payment"
	StepShip      = "arrange-shipping"
)

// Order is the saga's data.
type Order struct {
	ID       string `json:"id"`
	Customer string `json:"customer"`
	SKU      string `json:"sku"`
	Quantity int    `json:"quantity"`
	Amount   int    `json:"amount"` // cents
}

// Reservation is the inventory service's reply.
type Reservation struct {
	ID        string `json:"id"`
	Warehouse string `json:"warehouse"`
}

// Shipment is the shipping step's payload.
type Shipment struct {
	Order     string `json:"order"`
	Warehouse string `json:"warehouse"`
	Quantity  int    `json:"quantity"`
}

// Definition returns the order saga: three steps, each with its
// compensation.
func Definition() saga.Definition {
	retry := saga.Retry{Attempts: 3, Backoff: 200 * time.Millisecond}
	return saga.Definition{
		Name:    SagaName,
		Timeout: time.Minute,
		// A compensation that keeps failing leaves the saga Failed, for a
		// person to look at (eventbus saga list --state failed) and resume
		// (eventbus saga retry).
		CompensationRetry: saga.Retry{Attempts: 3, Backoff: 100 * time.Millisecond},
		Steps: []saga.Step{
			{Name: StepReserve, Service: "inventory", Command: "inventory.reserve", Compensation: "inventory.release",
				Timeout: 5 * time.Second, Retry: retry},
			{Name: StepAuthorize, Service: "payment", Command: "payment.authorize", Compensation: "payment.void",
				Timeout: 5 * time.Second, Retry: retry},
			{Name: StepShip, Service: "shipping", Command: "shipping.arrange", Compensation: "shipping.cancel",
				Timeout: 5 * time.Second,
				// Shipping needs the reservation's warehouse: an earlier reply.
				Input: func(in saga.Input) (any, error) {
					var o Order
					var r Reservation
					if err := in.Decode(&o); err != nil {
						return nil, err
					}
					if err := in.Reply(StepReserve, &r); err != nil {
						return nil, err
					}
					return Shipment{Order: o.ID, Warehouse: r.Warehouse, Quantity: o.Quantity}, nil
				}},
		},
	}
}

// Options configures the services of a Shop.
type Options struct {
	// Decline tells whether the payment of an order is declined; nil
	// authorizes every payment the customer's balance covers.
	Decline func(Order) bool
	// Fault, when it returns an error for a command (or compensation) type
	// and order, makes the service's handler return that error, a transient
	// failure, before it acts: a way to watch retries and failed
	// compensations.
	Fault func(command string, o Order) error
	// Log receives one line per action of a service, with the service's
	// name; nil discards them.
	Log func(service, line string)
}

// Shop holds the services' state; each service would own its own database.
type Shop struct {
	opts     Options
	mu       sync.Mutex
	stock    map[string]int
	reserved map[string]int
	balance  map[string]int
	held     map[string]int
	// orders holds what each order reserved and authorized, so that a
	// compensation undoes exactly what took effect, whatever the replies
	// the orchestrator received.
	orders map[string]*effects
}

type effects struct{ reserved, authorized int }

// New returns a shop with the given stock per SKU and balance per customer
// (cents). It copies the maps.
func New(stock, balance map[string]int, opts *Options) *Shop {
	s := &Shop{stock: map[string]int{}, reserved: map[string]int{}, balance: map[string]int{}, held: map[string]int{}, orders: map[string]*effects{}}
	if opts != nil {
		s.opts = *opts
	}
	for k, v := range stock {
		s.stock[k] = v
	}
	for k, v := range balance {
		s.balance[k] = v
	}
	return s
}

// Stock returns the units of sku in stock and reserved.
func (s *Shop) Stock(sku string) (stock, reserved int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stock[sku], s.reserved[sku]
}

// Balance returns the customer's balance and the amount authorized
// (cents).
func (s *Shop) Balance(customer string) (balance, held int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.balance[customer], s.held[customer]
}

// effectsOf returns the record of order id; s.mu must be held.
func (s *Shop) effectsOf(id string) *effects {
	e := s.orders[id]
	if e == nil {
		e = &effects{}
		s.orders[id] = e
	}
	return e
}

func (s *Shop) log(service, format string, args ...any) {
	if s.opts.Log != nil {
		s.opts.Log(service, fmt.Sprintf(format, args...))
	}
}

// Services names the shop's participant services.
var Services = []string{"inventory", "payment", "shipping"}

// Participants registers the named services (inventory, payment,
// shipping; every one when none is named) on bus, recording their outcomes
// in store; call it before or after bus.Start.
func (s *Shop) Participants(bus *eventbus.Bus, store saga.Store, services ...string) error {
	if len(services) == 0 {
		services = Services
	}
	ps := map[string]*saga.Participant{}
	for _, name := range services {
		p, err := saga.NewParticipant(bus, name, store, nil)
		if err != nil {
			return err
		}
		ps[name] = p
	}
	order := func(req *saga.Request) (Order, error) {
		var o Order
		if err := req.Decode(&o); err != nil {
			return o, saga.Fail(err)
		}
		if s.opts.Fault != nil {
			if err := s.opts.Fault(req.Message.Type, o); err != nil {
				return o, err
			}
		}
		return o, nil
	}
	handle := func(service, command string, h saga.StepHandler) error {
		if p := ps[service]; p != nil {
			return p.Handle(command, h)
		}
		return nil
	}
	return errors.Join(
		handle("inventory", "inventory.reserve", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.stock[o.SKU] < o.Quantity {
				return nil, saga.Fail(fmt.Errorf("only %d of %s in stock", s.stock[o.SKU], o.SKU))
			}
			s.stock[o.SKU] -= o.Quantity
			s.reserved[o.SKU] += o.Quantity
			s.effectsOf(o.ID).reserved += o.Quantity
			s.log("inventory", "reserved %d x %s for %s", o.Quantity, o.SKU, o.ID)
			return Reservation{ID: "res-" + o.ID, Warehouse: "north"}, nil
		}),
		handle("inventory", "inventory.release", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			e := s.effectsOf(o.ID)
			if e.reserved == 0 {
				return nil, nil
			}
			s.stock[o.SKU] += e.reserved
			s.reserved[o.SKU] -= e.reserved
			s.log("inventory", "released the reservation of %s (%d x %s)", o.ID, e.reserved, o.SKU)
			e.reserved = 0
			return nil, nil
		}),
		handle("payment", "payment.authorize", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			if s.opts.Decline != nil && s.opts.Decline(o) {
				s.log("payment", "declined %d.%02d for %s (%s)", o.Amount/100, o.Amount%100, o.Customer, o.ID)
				return nil, saga.Fail(errors.New("card declined"))
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.balance[o.Customer] < o.Amount {
				return nil, saga.Fail(fmt.Errorf("insufficient funds for %d.%02d", o.Amount/100, o.Amount%100))
			}
			s.balance[o.Customer] -= o.Amount
			s.held[o.Customer] += o.Amount
			s.effectsOf(o.ID).authorized += o.Amount
			s.log("payment", "authorized %d.%02d for %s (%s)", o.Amount/100, o.Amount%100, o.Customer, o.ID)
			return map[string]string{"authorization": "auth-" + o.ID}, nil
		}),
		handle("payment", "payment.void", func(ctx context.Context, req *saga.Request) (any, error) {
			o, err := order(req)
			if err != nil {
				return nil, err
			}
			s.mu.Lock()
			defer s.mu.Unlock()
			e := s.effectsOf(o.ID)
			if e.authorized == 0 {
				return nil, nil
			}
			s.balance[o.Customer] += e.authorized
			s.held[o.Customer] -= e.authorized
			s.log("payment", "voided the authorization of %s for %s", o.ID, o.Customer)
			e.authorized = 0
			return nil, nil
		}),
		handle("shipping", "shipping.arrange", func(ctx context.Context, req *saga.Request) (any, error) {
			var sh Shipment
			if err := req.Decode(&sh); err != nil {
				return nil, saga.Fail(err)
			}
			s.log("shipping", "arranged %d items of %s from warehouse %s", sh.Quantity, sh.Order, sh.Warehouse)
			return map[string]string{"tracking": "TRK-" + sh.Order}, nil
		}),
		handle("shipping", "shipping.cancel", func(ctx context.Context, req *saga.Request) (any, error) {
			s.log("shipping", "cancelled a shipment")
			return nil, nil
		}),
	)
}

// Wait polls orc until the saga id is no longer active, and returns it.
func Wait(ctx context.Context, orc *saga.Orchestrator, id string) (*saga.Instance, error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		in, err := orc.Get(ctx, id)
		if err != nil {
			return nil, err
		}
		if !in.State.Active() {
			return in, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}
