package config_test

import (
	"context"
	"fmt"

	"github.com/marty-msf/eventbus"
	"github.com/marty-msf/eventbus/config"
	_ "github.com/marty-msf/eventbus/membus" // registers mem://
)

func Example() {
	const file = `
source: shop
backends:
  local:
    url: mem://
    options:
      buffer_size: 1024
routes:
  - pattern: event
    match: "order.*"
    backend: local
`
	cfg, err := config.Parse("eventbus.yaml", []byte(file), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	bus, err := cfg.NewBus(context.Background(), nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer bus.Close(context.Background())
	fmt.Println(bus.Backends(), cfg.Backends[0].URL)
	// Output: [local] mem://?buffer_size=1024
}

func ExampleError() {
	const file = `
backends:
  local:
    url: mem://?buffer=10
routes:
  - pattern: event
    backend: remote
retry:
  max_attempts: three
`
	_, err := config.Parse("eventbus.yaml", []byte(file), nil)
	fmt.Println(err)
	_ = eventbus.ErrUnknownBackend // errors.Is(err, eventbus.ErrUnknownBackend) holds
	// Output:
	// config: 3 problems
	//   eventbus.yaml:4:10: backends.local.url: URL "mem://?buffer=REDACTED": parameter "buffer": unknown parameter
	//   eventbus.yaml:7:14: routes[0].backend: unknown backend "remote" (declared: local)
	//   eventbus.yaml:9:17: retry.max_attempts: wrong type: "three" is not an integer
}
