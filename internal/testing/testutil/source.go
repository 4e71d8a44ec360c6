package testutil

import (
	"net"
	"time"
)

// AcceptFrom listens on 127.0.0.1 and returns the listener's address and
// a channel that yields the remote IP of the first accepted connection.
func AcceptFrom(t TB) (string, <-chan net.IP) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan net.IP, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		ch <- c.RemoteAddr().(*net.TCPAddr).IP
		c.Close()
	}()
	return ln.Addr().String(), ch
}

// WantSource waits for the IP AcceptFrom yields and fails the test unless
// it is want: the connection must leave from the bind address.
func WantSource(t TB, ch <-chan net.IP, want string) {
	t.Helper()
	select {
	case ip := <-ch:
		if ip.String() != want {
			t.Fatalf("connection came from %s, want the bind address %s", ip, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no connection arrived")
	}
}
