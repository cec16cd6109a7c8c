package kafkabus_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/kafkabus"
)

// deadLetterTopic creates dl's topic with one partition and returns it.
func deadLetterTopic(ctx context.Context, t *testing.T, d *kafkabus.Driver, dl driver.Destination) string {
	t.Helper()
	topic := d.Topic(dl)
	if _, err := d.Admin().CreateTopic(ctx, 1, -1, nil, topic); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
		t.Fatal(err)
	}
	return topic
}

// readAll reads dl's dead letters and returns their values, in order.
func readAll(ctx context.Context, d *kafkabus.Driver, dl driver.Destination) ([]string, error) {
	var got []string
	err := d.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
		got = append(got, string(e.Message.Data))
		return true
	})
	return got, err
}

// TestReadDeadLettersEndsWithoutTheLastOffset: a read ends when the last
// offset it took as its bound never comes as a record. It reads the
// records of a committed transaction (whose last offset is the commit
// marker, a control record, which is not passed on), and ends with nothing
// when the records it bounded are removed (DeleteRecords) between the
// bounds and the first fetch. Before, both waited for their context.
func TestReadDeadLettersEndsWithoutTheLastOffset(t *testing.T) {
	t.Run("transaction", func(t *testing.T) {
		d := openDriver(t, testConfig())
		ctx := ctxFor(t, 60*time.Second)
		dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "dltxn"+unique(), "e"))
		topic := deadLetterTopic(ctx, t, d, dl)
		producer, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...), kgo.TransactionalID("dltxn-"+unique()))
		if err != nil {
			t.Fatal(err)
		}
		defer producer.Close()
		if err := producer.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		want := []string{"a", "b", "c"}
		for _, v := range want {
			if err := producer.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := producer.EndTransaction(ctx, kgo.TryCommit); err != nil {
			t.Fatal(err)
		}
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		got, err := readAll(rctx, d, dl)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("read %q, %v; want %q", got, err, want)
		}
	})
	t.Run("removed after bounds", func(t *testing.T) {
		d := openDriver(t, testConfig())
		ctx := ctxFor(t, 60*time.Second)
		dl := driver.DeadLetterOf(driver.NewDestination(driver.Event, "dlgone"+unique(), "e"))
		topic := deadLetterTopic(ctx, t, d, dl)
		for _, v := range []string{"a", "b", "c"} {
			if err := d.Client().ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		details, err := d.Admin().ListTopics(ctx, topic)
		if err != nil {
			t.Fatal(err)
		}
		id := details[topic].ID
		// The first fetch of the topic waits while its records are removed.
		removed := make(chan error, 1)
		cluster.ControlKey(int16(kmsg.Fetch), func(req kmsg.Request) (kmsg.Response, error, bool) {
			ours := false
			for _, ft := range req.(*kmsg.FetchRequest).Topics {
				ours = ours || ft.Topic == topic || ft.TopicID == id
			}
			if !ours {
				cluster.KeepControl()
				return nil, nil, false
			}
			cluster.SleepControl(func() {
				resps, err := d.Admin().DeleteRecords(ctx, kadm.Offsets{topic: {0: {Topic: topic, Partition: 0, At: 3, LeaderEpoch: -1}}})
				if err == nil {
					err = resps.Error()
				}
				removed <- err
			})
			return nil, nil, false
		})
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		got, err := readAll(rctx, d, dl)
		select {
		case rerr := <-removed:
			if rerr != nil {
				t.Fatalf("DeleteRecords: %v", rerr)
			}
		default:
			t.Fatal("the read fetched nothing")
		}
		if err != nil || len(got) != 0 {
			t.Fatalf("read %q, %v; want nothing (removed after the bounds)", got, err)
		}
	})
}
