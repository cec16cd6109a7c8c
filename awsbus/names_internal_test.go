package awsbus

import (
	"strings"
	"testing"

	"github.com/marty-msf/eventbus/driver"
)

func TestResourceNames(t *testing.T) {
	c := &Config{}
	long := strings.Repeat("verylongtypename.", 10) + "end"
	dests := []driver.Destination{
		driver.NewDestination(driver.Event, "a.b"),
		driver.NewDestination(driver.Event, "a_b"),
		driver.NewDestination(driver.Event, long),
		driver.NewDestination(driver.Stream, "clicks"),
		driver.NewDestination(driver.Command, "billing", "charge"),
		driver.DeadLetterOf(driver.NewDestination(driver.Stream, "clicks")),
	}
	seen := map[string]string{}
	for _, d := range dests {
		for _, name := range []string{c.TopicName(d), c.QueueName(d, "g1"), c.QueueName(d, "g2"), c.privateQueueName(d, "i1"), c.keeperName(d)} {
			if len(name) > maxQueueName {
				t.Errorf("%q: %d characters, SQS allows %d", name, len(name), maxQueueName)
			}
			base := strings.TrimSuffix(name, fifoSuffix)
			for i := 0; i < len(base); i++ {
				if !nameChar(base[i]) {
					t.Errorf("%q: character %q not allowed", name, base[i])
				}
			}
			if fifo := c.isFIFO(d); fifo != strings.HasSuffix(name, fifoSuffix) {
				t.Errorf("%q for %s: FIFO %v", name, d, fifo)
			}
			if !strings.HasPrefix(name, "eventbus-") {
				t.Errorf("%q lacks the prefix", name)
			}
			if prev, dup := seen[name]; dup && prev != d.Name {
				t.Errorf("%q names both %s and %s", name, prev, d.Name)
			}
			seen[name] = d.Name
		}
		if again := (&Config{}).TopicName(d); again != c.TopicName(d) {
			t.Errorf("names of %s are not deterministic: %q and %q", d, again, c.TopicName(d))
		}
	}
	// Commands share one queue whatever the group; event groups do not.
	cmd := dests[4]
	if c.QueueName(cmd, "x") != c.QueueName(cmd, "y") {
		t.Error("a command destination's groups do not share its queue")
	}
	if c.QueueName(dests[0], "x") == c.QueueName(dests[0], "y") {
		t.Error("two event groups share a queue")
	}
	if a, b := c.TopicName(dests[0]), c.TopicName(dests[1]); a == b {
		t.Errorf("a.b and a_b share topic %q", a)
	}
	if !(&Config{FIFO: true}).isFIFO(cmd) || c.isFIFO(cmd) {
		t.Error("commands are FIFO exactly when Config.FIFO says so")
	}
}

func TestCheckDestination(t *testing.T) {
	for _, d := range []driver.Destination{
		{Pattern: driver.Event, Name: "commands.x"},
		{Pattern: driver.Event, Name: "events."},
		{Pattern: driver.Event, Name: "events.a b"},
		{Pattern: driver.Event, Name: "events.café"},
		{Pattern: 0, Name: "x.y"},
	} {
		if err := checkDestination(d); err == nil {
			t.Errorf("%+v accepted", d)
		}
	}
	if err := checkDestination(driver.NewDestination(driver.Event, "order.created")); err != nil {
		t.Error(err)
	}
}

func TestGroupAndDedupIDs(t *testing.T) {
	m := &driver.Message{ID: "1", Source: "/a", Key: "customer-42"}
	if groupID(m, false) != "customer-42" {
		t.Errorf("group id %q, want the key", groupID(m, false))
	}
	m.Key = "schlüssel mit leerzeichen"
	if g := groupID(m, false); g == m.Key || len(g) > 128 {
		t.Errorf("group id %q: a key SQS refuses must be hashed", g)
	}
	m.Key = ""
	if groupID(m, false) != "1" {
		t.Errorf("group id %q, want the id without a key", groupID(m, false))
	}
	other := &driver.Message{ID: "1", Source: "/b"}
	if dedupID(m) == dedupID(other) {
		t.Error("the same id from two sources has one de-duplication id")
	}
	if len(dedupID(m)) > 128 {
		t.Error("de-duplication id longer than 128")
	}
	replay := m.Clone()
	replay.Extensions = map[string]string{driver.ExtReplayed: "2026-11-27T15:00:00Z"}
	if dedupID(replay) == dedupID(m) {
		t.Error("a dead letter's replay has the de-duplication id of the original publish")
	}
}
