package chaos

import "fmt"

// Address plan of a chaos cluster: block b gives each node i the loopback
// address 127.b.0.(10+i) to bind and 127.b.1.(10+i) for its proxy, which
// is what the node advertises; clients connect from 127.b.2.1. Linux routes
// all of 127.0.0.0/8 to lo, so no interface set-up is needed.
const (
	subnetBind   = 0
	subnetProxy  = 1
	subnetClient = 2
)

func ipOf(block, subnet, host int) string {
	return fmt.Sprintf("127.%d.%d.%d", block, subnet, host)
}
