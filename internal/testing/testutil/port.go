package testutil

import (
	"errors"
	"fmt"
	"math/rand"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// FreePort returns a port on 127.0.0.1, free for TCP and UDP a moment ago,
// below the kernel's ephemeral range (see PickPort).
func FreePort(t TB) int {
	t.Helper()
	p, err := PickPort()
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	return p
}

// PickPort returns a port on 127.0.0.1 that was free for both TCP and UDP
// (Serf uses both on one port) a moment ago. It is drawn at random from
// below the kernel's ephemeral port range: a port the kernel hands out for
// ":0" or to an outgoing connection can be taken again by any connection of
// any process between the check and the moment a test's server binds it
// (or binds it again after a restart); ports below the range are only
// taken by processes that ask for them by number.
func PickPort() (int, error) {
	low := ephemeralLow()
	const floor = 20000
	if low-floor < 1000 {
		return 0, fmt.Errorf("ephemeral port range starts at %d: too little room below it", low)
	}
	var err error
	for i := 0; i < 100; i++ {
		p := floor + rand.Intn(low-floor)
		if err = portFree(p); err == nil {
			return p, nil
		}
	}
	return 0, fmt.Errorf("no free port below %d after 100 tries: %w", low, err)
}

func portFree(p int) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return err
	}
	return pc.Close()
}

// ephemeralLow is the first port of the kernel's ephemeral range (32768
// when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) < 1 {
		return 32768
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return n
}

// AddrInUse reports whether err is a bind failing because the address is
// taken.
func AddrInUse(err error) bool {
	return err != nil && (errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use"))
}
