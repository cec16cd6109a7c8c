// Command payments processes card payments across three services on the
// embedded default (an in-process NATS server with JetStream; nothing to
// install):
//
//   - payments answers the query payment.authorize: it asks fraud for a
//     score, declines with the typed error card_declined or fraud_suspected,
//     and publishes payment.authorized;
//
//   - fraud answers the query fraud.score;
//
//   - ledger (a consumer group) books each authorized payment. Its bank
//     link fails the first time it is used: the bus retries the event with
//     backoff, and the ledger books by payment id, so the retried event is
//     booked exactly once.
//
//     go run ./examples/payments
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// Payment is a request to charge a card.
type Payment struct {
	ID     string `json:"id"`
	Card   string `json:"card"`
	Amount int    `json:"amount_cents"`
}

// Authorized is the event of an authorized payment.
type Authorized struct {
	PaymentID string `json:"payment_id"`
	Amount    int    `json:"amount_cents"`
}

// limit is every card's limit, in cents.
const limit = 100_00

// Outcome is what the services did.
type Outcome struct {
	Authorized []string          // payment ids, in request order
	Declined   map[string]string // payment id → error code
	Ledger     map[string]int    // payment id → amount booked
	Attempts   int               // bank calls made by the ledger
}

func main() {
	dir, err := os.MkdirTemp("", "eventbus-payments-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := run(ctx, dir, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, dataDir string, out io.Writer) (*Outcome, error) {
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(dataDir), &eventbus.Options{
		Source: "payments",
		// Quick retries, so that the example does not keep you waiting.
		Retry: eventbus.RetryPolicy{MaxAttempts: 5, InitialBackoff: 50 * time.Millisecond, MaxBackoff: time.Second},
	})
	if err != nil {
		return nil, err
	}
	defer bus.Close(context.WithoutCancel(ctx))

	var mu sync.Mutex
	o := &Outcome{Declined: map[string]string{}, Ledger: map[string]int{}}
	booked := make(chan string, 16)

	_, err = bus.HandleQuery(ctx, "fraud", "fraud.score",
		eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, p Payment) (int, error) {
			if p.Card == "4000-0000-0000-0666" {
				return 95, nil
			}
			return 5, nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = bus.HandleQuery(ctx, "payments", "payment.authorize",
		eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, p Payment) (string, error) {
			score, err := eventbus.Ask[int](ctx, bus, "fraud", "fraud.score", p)
			if err != nil {
				return "", err
			}
			switch {
			case score > 80:
				return "", eventbus.Errorf("fraud_suspected", "fraud score %d", score)
			case p.Amount > limit:
				return "", eventbus.Errorf("card_declined", "%d cents exceeds the card's limit", p.Amount)
			}
			ev, err := bus.NewMessage("payment.authorized", Authorized{PaymentID: p.ID, Amount: p.Amount})
			if err != nil {
				return "", err
			}
			ev.Key, ev.CorrelationID = p.ID, m.ID
			return "auth-" + p.ID, bus.PublishEvent(ctx, ev)
		}))
	if err != nil {
		return nil, err
	}
	_, err = bus.SubscribeEvents(ctx, []string{"payment.authorized"}, "ledger",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, a Authorized) error {
			mu.Lock()
			defer mu.Unlock()
			o.Attempts++
			if o.Attempts == 1 {
				fmt.Fprintf(out, "ledger:   bank link down while booking %s; the bus will retry\n", a.PaymentID)
				return errors.New("bank link down")
			}
			if _, done := o.Ledger[a.PaymentID]; done {
				return nil // already booked: a redelivery
			}
			o.Ledger[a.PaymentID] = a.Amount
			fmt.Fprintf(out, "ledger:   booked %s, %d cents\n", a.PaymentID, a.Amount)
			booked <- a.PaymentID
			return nil
		}))
	if err != nil {
		return nil, err
	}
	if err := bus.Start(ctx); err != nil {
		return nil, err
	}

	for _, p := range []Payment{
		{"p-1", "4242-4242-4242-4242", 25_00},
		{"p-2", "4242-4242-4242-4242", 250_00},
		{"p-3", "4000-0000-0000-0666", 10_00},
		{"p-4", "5555-5555-5555-4444", 99_99},
	} {
		auth, err := eventbus.Ask[string](ctx, bus, "payments", "payment.authorize", p)
		var re *eventbus.RemoteError
		switch {
		case errors.As(err, &re):
			o.Declined[p.ID] = re.Code
			fmt.Fprintf(out, "checkout: %s declined: %s (%s)\n", p.ID, re.Message, re.Code)
		case err != nil:
			return nil, err
		default:
			o.Authorized = append(o.Authorized, p.ID)
			fmt.Fprintf(out, "checkout: %s authorized (%s)\n", p.ID, auth)
		}
	}
	for range o.Authorized {
		select {
		case <-booked:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the ledger: %w", ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	total := 0
	for _, a := range o.Ledger {
		total += a
	}
	fmt.Fprintf(out, "%d authorized, %d declined; ledger: %d entries, %d cents, after %d bank calls\n",
		len(o.Authorized), len(o.Declined), len(o.Ledger), total, o.Attempts)
	return o, nil
}
