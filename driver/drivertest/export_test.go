package drivertest

import "time"

// SetDeliveryTimeout shortens the wait for deliveries that must arrive, for
// the self-test's faulty drivers, which lose messages on purpose. It must be
// called before the suite runs.
func SetDeliveryTimeout(d time.Duration) { deliveryTimeout = d }
