package testenv_test

import (
	"fmt"

	"github.com/marty-msf/eventbus/internal/testenv"
)

func ExampleRedact() {
	fmt.Println(testenv.Redact("amqp://guest:guest@127.0.0.1:5672/"))
	fmt.Println(testenv.Redact("nats://s3cr3t@127.0.0.1:4222"))
	fmt.Println(testenv.Redact("host=127.0.0.1 user=app password='p w' dbname=test"))
	// Output:
	// amqp://guest:xxxxx@127.0.0.1:5672/
	// nats://xxxxx@127.0.0.1:4222
	// host=127.0.0.1 user=app password=xxxxx dbname=test
}
