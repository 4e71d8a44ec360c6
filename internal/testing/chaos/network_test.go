package chaos

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// echoNode is a TCP and UDP echo server on its own loopback address behind
// a proxy of net, and a dialer that connects from another node's address.
type echoNode struct {
	net       *Network
	proxy     *Proxy
	port      int
	proxyAddr string
}

func startEcho(t *testing.T, block int) *echoNode {
	t.Helper()
	bind := ipOf(block, 0, 10)
	proxyIP := ipOf(block, 1, 10)
	ln, err := net.Listen("tcp", bind+":0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(bind), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(c, c); c.Close() }()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := uc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			// Echo to the proxy's sender's advertised address: the
			// payload names it, as memberlist's pings do.
			to, err := net.ResolveUDPAddr("udp", string(buf[:n]))
			if err != nil {
				to = from
			}
			_, _ = uc.WriteToUDP(buf[:n], to)
		}
	}()
	nw := NewNetwork(1)
	nw.AddEndpoint("a", ipOf(block, 0, 11))
	nw.AddEndpoint("b", bind)
	p, err := nw.AddProxy("b", proxyIP, bind, []int{port}, []int{port})
	if err != nil {
		t.Fatal(err)
	}
	e := &echoNode{net: nw, proxy: p, port: port, proxyAddr: net.JoinHostPort(proxyIP, strconv.Itoa(port))}
	t.Cleanup(func() {
		nw.Close()
		ln.Close()
		uc.Close()
	})
	return e
}

func (e *echoNode) dial(t *testing.T, fromIP string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(fromIP)}}
	c, err := d.Dial("tcp", e.proxyAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip sends a line and reads it back, returning how long it took.
func roundTrip(c net.Conn, r *bufio.Reader, line string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	_ = c.SetDeadline(start.Add(timeout))
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return 0, err
	}
	got, err := r.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if got != line+"\n" {
		return 0, io.ErrUnexpectedEOF
	}
	return time.Since(start), nil
}

// TestProxyDelaysPerDirection: a delay injected on a->b slows a's
// connections by that much, and b->a adds its own; a client's connection,
// from an address that is no node, is untouched.
func TestProxyDelaysPerDirection(t *testing.T) {
	e := startEcho(t, 201)
	a := e.dial(t, ipOf(201, 0, 11))
	ra := bufio.NewReader(a)
	if d, err := roundTrip(a, ra, "warm", 5*time.Second); err != nil || d > time.Second {
		t.Fatalf("round trip through a passing proxy: %v, %v", d, err)
	}
	e.net.Set(Link{"a", "b"}, Fault{Delay: 150 * time.Millisecond})
	e.net.Set(Link{"b", "a"}, Fault{Delay: 100 * time.Millisecond})
	d, err := roundTrip(a, ra, "slow", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if d < 250*time.Millisecond {
		t.Fatalf("round trip with 150 ms + 100 ms of delay took %s", d)
	}
	cl := e.dial(t, "127.0.0.1")
	rc := bufio.NewReader(cl)
	if d, err := roundTrip(cl, rc, "client", 5*time.Second); err != nil || d > 100*time.Millisecond {
		t.Fatalf("a client's round trip took %s (%v); the delay is on a's links only", d, err)
	}
	e.net.Heal()
	if d, err := roundTrip(a, ra, "healed", 5*time.Second); err != nil || d > 100*time.Millisecond {
		t.Fatalf("round trip after heal took %s (%v)", d, err)
	}
}

// TestProxyJitterKeepsTCPOrder: with jitter larger than the spacing of
// writes, the bytes still arrive in order.
func TestProxyJitterKeepsTCPOrder(t *testing.T) {
	e := startEcho(t, 202)
	e.net.Set(Link{"a", "b"}, Fault{Delay: 5 * time.Millisecond, Jitter: 40 * time.Millisecond})
	a := e.dial(t, ipOf(202, 0, 11))
	r := bufio.NewReader(a)
	_ = a.SetDeadline(time.Now().Add(10 * time.Second))
	for i := 0; i < 50; i++ {
		if _, err := a.Write([]byte(strconv.Itoa(i) + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 50; i++ {
		got, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if got != strconv.Itoa(i)+"\n" {
			t.Fatalf("line %d arrived as %q: jitter reordered the stream", i, got)
		}
	}
}

// TestProxyBlackholeHoldsThenDelivers: a blackholed direction delivers
// nothing while it lasts and everything, in order, once healed.
func TestProxyBlackholeHoldsThenDelivers(t *testing.T) {
	e := startEcho(t, 203)
	a := e.dial(t, ipOf(203, 0, 11))
	r := bufio.NewReader(a)
	if _, err := roundTrip(a, r, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.net.Set(Link{"a", "b"}, Fault{Mode: Blackhole})
	if _, err := roundTrip(a, r, "held", 300*time.Millisecond); err == nil {
		t.Fatal("a round trip crossed a blackholed link")
	}
	e.net.Heal()
	_ = a.SetDeadline(time.Now().Add(5 * time.Second))
	got, err := r.ReadString('\n')
	if err != nil || got != "held\n" {
		t.Fatalf("after heal got %q, %v; want the held line", got, err)
	}
}

// TestProxyDropResets: a dropped link resets a connection that carries
// traffic across it and refuses new ones at once.
func TestProxyDropResets(t *testing.T) {
	e := startEcho(t, 204)
	a := e.dial(t, ipOf(204, 0, 11))
	r := bufio.NewReader(a)
	if _, err := roundTrip(a, r, "before", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	e.net.Set(Link{"a", "b"}, Fault{Mode: Drop})
	start := time.Now()
	if _, err := roundTrip(a, r, "dropped", 5*time.Second); err == nil {
		t.Fatal("a round trip crossed a dropped link")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a dropped link took %s to fail; it must fail fast", d)
	}
	// A new connection is reset right after the proxy accepts it: the
	// reset may beat the end of the handshake (the dial fails) or not (the
	// first round trip does).
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ipOf(204, 0, 11))}}
	if b, err := d.Dial("tcp", e.proxyAddr); err == nil {
		defer b.Close()
		if _, err := roundTrip(b, bufio.NewReader(b), "new", 2*time.Second); err == nil {
			t.Fatal("a new connection crossed a dropped link")
		}
	}
}

// TestProxyUDP: packets pass, are delayed, and are discarded by a cut
// link.
func TestProxyUDP(t *testing.T) {
	e := startEcho(t, 205)
	from := &net.UDPAddr{IP: net.ParseIP(ipOf(205, 0, 11))}
	pc, err := net.ListenUDP("udp", from)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	send := func(timeout time.Duration) (time.Duration, error) {
		start := time.Now()
		msg := pc.LocalAddr().String()
		if _, err := pc.WriteToUDP([]byte(msg), &net.UDPAddr{IP: net.ParseIP(ipOf(205, 1, 10)), Port: e.port}); err != nil {
			return 0, err
		}
		_ = pc.SetReadDeadline(start.Add(timeout))
		buf := make([]byte, 2048)
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			return 0, err
		}
		if string(buf[:n]) != msg {
			return 0, io.ErrUnexpectedEOF
		}
		return time.Since(start), nil
	}
	if _, err := send(2 * time.Second); err != nil {
		t.Fatalf("udp through a passing proxy: %v", err)
	}
	e.net.Set(Link{"a", "b"}, Fault{Delay: 120 * time.Millisecond})
	if d, err := send(2 * time.Second); err != nil || d < 120*time.Millisecond {
		t.Fatalf("udp with 120 ms delay: %s, %v", d, err)
	}
	e.net.Set(Link{"a", "b"}, Fault{Mode: Blackhole})
	if _, err := send(300 * time.Millisecond); err == nil {
		t.Fatal("a packet crossed a blackholed link")
	}
}

// TestPartitionLinks: Partition cuts exactly the links between groups.
func TestPartitionLinks(t *testing.T) {
	fs := Partition(Blackhole, []string{"s1"}, []string{"s2", "s3"})
	want := []Link{{"s1", "s2"}, {"s1", "s3"}, {"s2", "s1"}, {"s3", "s1"}}
	if len(fs) != len(want) {
		t.Fatalf("partition has %d links, want %d: %v", len(fs), len(want), fs)
	}
	for _, l := range want {
		if fs[l].Mode != Blackhole {
			t.Errorf("link %v is not cut", l)
		}
	}
	if _, ok := fs[Link{"s2", "s3"}]; ok {
		t.Error("link s2->s3 inside a group is cut")
	}
}

// TestProxyDownRefuses: while a proxy's port is down, connecting is
// refused at once (a client knows nothing was sent); Up restores it.
func TestProxyDownRefuses(t *testing.T) {
	e := startEcho(t, 206)
	e.proxy.Down(e.port)
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ipOf(206, 0, 11))}}
	if c, err := d.Dial("tcp", e.proxyAddr); err == nil {
		c.Close()
		t.Fatal("connected to a port that is down")
	}
	if err := e.proxy.Up(e.port); err != nil {
		t.Fatal(err)
	}
	a := e.dial(t, ipOf(206, 0, 11))
	if _, err := roundTrip(a, bufio.NewReader(a), "up", 5*time.Second); err != nil {
		t.Fatalf("round trip after Up: %v", err)
	}
}
