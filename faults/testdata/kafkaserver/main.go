// Command kafkaserver runs kfake, the in-process Kafka of franz-go, as a
// process with its state in a data directory, for the fault tests to kill
// and start again: kafkaserver -port N -data DIR.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port on 127.0.0.1")
	data := flag.String("data", "", "data directory (state survives a restart)")
	sync := flag.Bool("sync", false, "fsync every write")
	flag.Parse()
	opts := []kfake.Opt{
		kfake.NumBrokers(1), kfake.Ports(*port), kfake.DataDir(*data),
		kfake.DefaultNumPartitions(4), kfake.GroupMinSessionTimeout(100 * time.Millisecond),
		kfake.AllowAutoTopicCreation(),
	}
	if *sync {
		opts = append(opts, kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "kafkaserver:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	c.Close()
}
