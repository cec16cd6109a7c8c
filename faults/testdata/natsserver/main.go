// Command natsserver runs the embedded NATS server (the version eventbus
// is built against) with JetStream, for the fault tests to kill and start
// again: natsserver -port N -store DIR.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

func main() {
	port := flag.Int("port", 4222, "client port on 127.0.0.1")
	store := flag.String("store", "", "JetStream store directory")
	flag.Parse()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: *port, JetStream: true, StoreDir: *store, NoSigs: true,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "natsserver:", err)
		os.Exit(1)
	}
	s.Start()
	if !s.ReadyForConnections(30 * time.Second) {
		fmt.Fprintln(os.Stderr, "natsserver: not ready")
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	<-sig
	s.Shutdown()
}
