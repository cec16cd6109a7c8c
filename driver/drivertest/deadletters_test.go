package drivertest_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"testing"

	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/membus"
)

// dlFaults break one promise of driver.DeadLetterStore each; the suite must
// notice it in the subtest named by failIn.
var dlFaults = []fault{
	{"dl-read-consumes", "Attributes"},
	{"dl-strips-extensions", "Attributes"},
	{"dl-read-newest-first", "Order"},
	{"dl-read-ignores-stop", "Order"},
	{"dl-lists-unsorted", "Destinations"},
	{"dl-delete-counts-asked", "Delete"},
	{"dl-delete-any-destination", "ForeignRefs"},
	{"dl-purge-counts-zero", "Purge"},
	{"dl-missing-errors", "Missing"},
}

const dlFaultEnv = "DRIVERTEST_DL_FAULT"

// The dead-letter suite passes on membus, the driver its faults break.
func TestDeadLetterSuitePassesOnMembus(t *testing.T) {
	drivertest.RunDeadLetterTests(t, memHarness(t))
}

// A driver without driver.DeadLetterStore is skipped, not failed.
func TestDeadLetterSuiteSkipsWithoutStore(t *testing.T) {
	broker := membus.New(nil)
	t.Cleanup(func() { _ = broker.Close(context.Background()) })
	var skipped bool
	t.Run("suite", func(t *testing.T) {
		t.Cleanup(func() { skipped = t.Skipped() })
		drivertest.RunDeadLetterTests(t, drivertest.Harness{Open: func(context.Context) (driver.Driver, error) {
			return struct{ driver.Driver }{broker.Connect()}, nil
		}})
	})
	if !skipped {
		t.Fatal("the suite did not skip a driver that does not implement driver.DeadLetterStore")
	}
}

// TestDeadLetterSuiteDetectsFaults runs the dead-letter suite on each faulty
// store in a child process and checks that it fails where it should.
func TestDeadLetterSuiteDetectsFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the suite once per fault")
	}
	for _, f := range dlFaults {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestFaultyDeadLetterStore$/^"+f.failIn+"$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), dlFaultEnv+"="+f.name)
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatalf("the suite passed on a store with fault %s (err %v):\n%s", f.name, err, out)
			}
			want := regexp.MustCompile(`(?m)^\s*--- FAIL: TestFaultyDeadLetterStore/` + regexp.QuoteMeta(f.failIn) + `\b`)
			if !want.Match(out) {
				t.Errorf("fault %s: the suite did not fail in %s:\n%s", f.name, f.failIn, out)
			}
		})
	}
}

// TestFaultyDeadLetterStore is run by TestDeadLetterSuiteDetectsFaults in a
// child process.
func TestFaultyDeadLetterStore(t *testing.T) {
	name := os.Getenv(dlFaultEnv)
	if name == "" {
		t.Skip("run by TestDeadLetterSuiteDetectsFaults")
	}
	broker := membus.New(nil)
	t.Cleanup(func() { _ = broker.Close(context.Background()) })
	drivertest.RunDeadLetterTests(t, drivertest.Harness{Open: func(context.Context) (driver.Driver, error) {
		return faultyStore{broker.Connect(), name}, nil
	}})
}

// faultyStore is a membus connection whose DeadLetterStore breaks the
// contract as its fault says.
type faultyStore struct {
	*membus.Driver
	fault string
}

func (f faultyStore) DeadLetterDestinations(ctx context.Context) ([]driver.Destination, error) {
	ds, err := f.Driver.DeadLetterDestinations(ctx)
	if f.fault == "dl-lists-unsorted" {
		slices.Reverse(ds)
	}
	return ds, err
}

func (f faultyStore) ReadDeadLetters(ctx context.Context, dl driver.Destination, fn func(driver.DeadLetterEntry) bool) error {
	switch f.fault {
	case "dl-read-consumes":
		err := f.Driver.ReadDeadLetters(ctx, dl, fn)
		_, _ = f.Driver.PurgeDeadLetters(ctx, dl)
		return err
	case "dl-strips-extensions":
		return f.Driver.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			e.Message.Extensions = nil
			return fn(e)
		})
	case "dl-read-newest-first":
		var es []driver.DeadLetterEntry
		err := f.Driver.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			es = append(es, e)
			return true
		})
		slices.Reverse(es)
		for _, e := range es {
			if !fn(e) {
				break
			}
		}
		return err
	case "dl-read-ignores-stop":
		return f.Driver.ReadDeadLetters(ctx, dl, func(e driver.DeadLetterEntry) bool {
			fn(e)
			return true
		})
	case "dl-missing-errors":
		ds, err := f.Driver.DeadLetterDestinations(ctx)
		if err == nil && !slices.Contains(ds, dl) {
			return errors.New("no such destination: " + dl.Name)
		}
	}
	return f.Driver.ReadDeadLetters(ctx, dl, fn)
}

func (f faultyStore) DeleteDeadLetters(ctx context.Context, dl driver.Destination, refs []string) (int, error) {
	switch f.fault {
	case "dl-delete-counts-asked":
		_, err := f.Driver.DeleteDeadLetters(ctx, dl, refs)
		return len(refs), err
	case "dl-delete-any-destination":
		ds, err := f.Driver.DeadLetterDestinations(ctx)
		total := 0
		for _, d := range ds {
			n, _ := f.Driver.DeleteDeadLetters(ctx, d, refs)
			total += n
		}
		return total, err
	}
	return f.Driver.DeleteDeadLetters(ctx, dl, refs)
}

func (f faultyStore) PurgeDeadLetters(ctx context.Context, dl driver.Destination) (int, error) {
	n, err := f.Driver.PurgeDeadLetters(ctx, dl)
	if f.fault == "dl-purge-counts-zero" {
		n = 0
	}
	return n, err
}
