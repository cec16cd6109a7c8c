// Command userregistration onboards users across four services on the
// embedded default (an in-process NATS server with JetStream; nothing to
// install):
//
//   - users answers the query user.register: it refuses an address already
//     taken with the typed error email_taken, stores the user and publishes
//     user.registered;
//
//   - welcome (a consumer group) sends the command email.send to mailer;
//
//   - mailer handles that command, once per user even if a command is
//     delivered twice;
//
//   - profiles (another group) creates each user's profile.
//
//     go run ./examples/userregistration
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/natsbus"
)

// Registration is what a client asks for.
type Registration struct {
	Email string `json:"email"`
	Name  string `json:"name"`
}

// UserRegistered is the event of a new user.
type UserRegistered struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
}

// SendEmail is the mailer's command.
type SendEmail struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// Outcome is what the services did.
type Outcome struct {
	Users    map[string]string // email → user id
	Emails   []string          // "to: subject", sorted
	Profiles []string          // user ids, sorted
	Refused  []string          // emails refused, with the error code
}

func main() {
	dir, err := os.MkdirTemp("", "eventbus-userregistration-")
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
	bus, err := eventbus.Open(ctx, natsbus.EmbeddedURL(dataDir), &eventbus.Options{Source: "onboarding"})
	if err != nil {
		return nil, err
	}
	defer bus.Close(context.WithoutCancel(ctx))

	var mu sync.Mutex
	o := &Outcome{Users: map[string]string{}}
	sent := map[string]bool{} // the mailer's record of the user ids it emailed
	done := make(chan struct{}, 16)

	// users: the one service that decides whether an address is free.
	_, err = bus.HandleQuery(ctx, "users", "user.register",
		eventbus.TypedQuery(func(ctx context.Context, m *eventbus.Message, r Registration) (string, error) {
			r.Email = strings.ToLower(strings.TrimSpace(r.Email))
			mu.Lock()
			if _, taken := o.Users[r.Email]; taken {
				mu.Unlock()
				return "", eventbus.Errorf("email_taken", "%s is already registered", r.Email)
			}
			id := fmt.Sprintf("u-%d", len(o.Users)+1)
			o.Users[r.Email] = id
			mu.Unlock()
			ev, err := bus.NewMessage("user.registered", UserRegistered{UserID: id, Email: r.Email, Name: r.Name})
			if err != nil {
				return "", err
			}
			ev.Subject, ev.CorrelationID = id, m.ID
			return id, bus.PublishEvent(ctx, ev)
		}))
	if err != nil {
		return nil, err
	}
	// welcome: asks the mailer for a welcome email.
	_, err = bus.SubscribeEvents(ctx, []string{"user.registered"}, "welcome",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, u UserRegistered) error {
			c, err := bus.NewMessage("email.send", SendEmail{To: u.Email, Subject: "Welcome, " + u.Name})
			if err != nil {
				return err
			}
			// One id per user: a redelivered event sends the same command,
			// which the mailer recognises.
			c.ID, c.Subject = "welcome-"+u.UserID, u.UserID
			return bus.SendCommand(ctx, "mailer", c)
		}))
	if err != nil {
		return nil, err
	}
	_, err = bus.HandleCommand(ctx, "mailer", "email.send",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, e SendEmail) error {
			mu.Lock()
			defer mu.Unlock()
			if !sent[m.ID] {
				sent[m.ID] = true
				o.Emails = append(o.Emails, e.To+": "+e.Subject)
				fmt.Fprintf(out, "mailer:   sent %q to %s\n", e.Subject, e.To)
				done <- struct{}{}
			}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	_, err = bus.SubscribeEvents(ctx, []string{"user.registered"}, "profiles",
		eventbus.Typed(func(ctx context.Context, m *eventbus.Message, u UserRegistered) error {
			mu.Lock()
			defer mu.Unlock()
			o.Profiles = append(o.Profiles, u.UserID)
			fmt.Fprintf(out, "profiles: created the profile of %s (%s)\n", u.UserID, u.Name)
			done <- struct{}{}
			return nil
		}))
	if err != nil {
		return nil, err
	}
	if err := bus.Start(ctx); err != nil {
		return nil, err
	}

	signups := []Registration{
		{"ada@example.com", "Ada"}, {"grace@example.com", "Grace"},
		{"ADA@example.com", "Ada again"}, {"alan@example.com", "Alan"},
	}
	registered := 0
	for _, r := range signups {
		id, err := eventbus.Ask[string](ctx, bus, "users", "user.register", r)
		var re *eventbus.RemoteError
		switch {
		case errors.As(err, &re):
			o.Refused = append(o.Refused, r.Email+" ("+re.Code+")")
			fmt.Fprintf(out, "client:   %s refused: %s\n", r.Email, re.Message)
		case err != nil:
			return nil, err
		default:
			registered++
			fmt.Fprintf(out, "client:   %s registered as %s\n", r.Email, id)
		}
	}
	// Each registration ends with an email and a profile.
	for range 2 * registered {
		select {
		case <-done:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for the emails and profiles: %w", ctx.Err())
		}
	}
	mu.Lock()
	defer mu.Unlock()
	sort.Strings(o.Emails)
	sort.Strings(o.Profiles)
	fmt.Fprintf(out, "%d users, %d welcome emails, %d profiles, %d refused\n", len(o.Users), len(o.Emails), len(o.Profiles), len(o.Refused))
	return o, nil
}
