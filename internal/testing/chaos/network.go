package chaos

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"time"
)

// Mode is what a link does with traffic besides delaying it.
type Mode int

// Link modes.
const (
	// Pass forwards traffic (after the link's delay).
	Pass Mode = iota
	// Drop fails fast: TCP connections carrying traffic in the link's
	// direction are reset and new ones are refused with a reset; UDP
	// packets are discarded.
	Drop
	// Blackhole fails silently: TCP data in the link's direction is held
	// (connections stay open and nothing arrives, as during a real
	// partition; held data is delivered when the link heals, like TCP
	// retransmission); UDP packets are discarded.
	Blackhole
)

func (m Mode) String() string {
	switch m {
	case Pass:
		return "pass"
	case Drop:
		return "drop"
	case Blackhole:
		return "blackhole"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// Fault is the condition of one directed link.
type Fault struct {
	Mode Mode
	// Delay is added to every chunk of data (TCP) or packet (UDP) in the
	// link's direction; Jitter adds a uniform random 0..Jitter on top. TCP
	// data keeps its order (a chunk is never released before the previous
	// one); UDP packets may be reordered by jitter, as on a real network.
	Delay, Jitter time.Duration
}

// Link is a directed pair of endpoints: a node name, or Client.
type Link struct{ From, To string }

// Client is the endpoint name of every source address that is not a node.
const Client = "client"

// Network is the fault-injecting network between the nodes of a chaos
// cluster. Each node binds its listeners to its own loopback address and
// advertises the address of its proxy instead; a proxy forwards TCP and UDP
// to its node and knows the sending node by the connection's source address
// (nodes bind their outgoing connections to their own address). Faults are
// kept per directed link and apply to traffic already flowing as well as to
// new connections.
//
// Two layers make up a link's condition: the base (standing conditions such
// as inter-region latency) and the faults a nemesis injects; Heal clears
// the second only.
type Network struct {
	mu      sync.RWMutex
	base    map[Link]Fault
	faults  map[Link]Fault
	names   map[string]string // source IP -> endpoint name
	changed chan struct{}     // closed and replaced on every change
	proxies []*Proxy
	closed  bool

	rngMu sync.Mutex
	rng   *rand.Rand
}

// NewNetwork returns an empty network whose jitter draws from seed.
func NewNetwork(seed uint64) *Network {
	return &Network{
		base:    map[Link]Fault{},
		faults:  map[Link]Fault{},
		names:   map[string]string{},
		changed: make(chan struct{}),
		rng:     rand.New(rand.NewPCG(seed, 0x6e6574)),
	}
}

// AddEndpoint names the endpoint whose connections come from ip.
func (n *Network) AddEndpoint(name, ip string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.names[net.ParseIP(ip).String()] = name
}

func (n *Network) endpoint(ip net.IP) string {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if name, ok := n.names[ip.String()]; ok {
		return name
	}
	return Client
}

// Fault returns the effective condition of a link: base and injected
// delays add up, and an injected mode overrides the base mode.
func (n *Network) Fault(l Link) Fault {
	n.mu.RLock()
	defer n.mu.RUnlock()
	b, f := n.base[l], n.faults[l]
	out := Fault{Mode: b.Mode, Delay: b.Delay + f.Delay, Jitter: b.Jitter + f.Jitter}
	if f.Mode != Pass {
		out.Mode = f.Mode
	}
	return out
}

// watch returns a channel closed at the next change of any link.
func (n *Network) watch() <-chan struct{} {
	n.mu.RLock()
	defer n.mu.RUnlock()
	return n.changed
}

func (n *Network) notifyLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// SetBase sets the standing condition of a link.
func (n *Network) SetBase(l Link, f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.base[l] = f
	n.notifyLocked()
}

// Set injects a fault on a link, replacing the one injected before.
func (n *Network) Set(l Link, f Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults[l] = f
	n.notifyLocked()
}

// SetMany injects faults on several links at once.
func (n *Network) SetMany(fs map[Link]Fault) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for l, f := range fs {
		n.faults[l] = f
	}
	n.notifyLocked()
}

// Heal removes every injected fault; base conditions stay.
func (n *Network) Heal() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.faults = map[Link]Fault{}
	n.notifyLocked()
}

// Injected returns the injected faults, for logs and reports.
func (n *Network) Injected() map[Link]Fault {
	n.mu.RLock()
	defer n.mu.RUnlock()
	out := make(map[Link]Fault, len(n.faults))
	for l, f := range n.faults {
		out[l] = f
	}
	return out
}

// Partition cuts every link between endpoints of different groups, in both
// directions, with mode (Drop or Blackhole). Endpoints in no group keep
// their links.
func Partition(mode Mode, groups ...[]string) map[Link]Fault {
	out := map[Link]Fault{}
	for i, g := range groups {
		for j, h := range groups {
			if i == j {
				continue
			}
			for _, a := range g {
				for _, b := range h {
					out[Link{a, b}] = Fault{Mode: mode}
				}
			}
		}
	}
	return out
}

// delay draws the delay of one chunk or packet.
func (n *Network) delay(f Fault) time.Duration {
	d := f.Delay
	if f.Jitter > 0 {
		n.rngMu.Lock()
		d += time.Duration(n.rng.Int64N(int64(f.Jitter) + 1))
		n.rngMu.Unlock()
	}
	return d
}

// Close stops every proxy and closes every proxied connection.
func (n *Network) Close() {
	n.mu.Lock()
	n.closed = true
	ps := n.proxies
	n.proxies = nil
	n.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
}

// Proxy forwards the ports of one node from its advertised address to the
// address it binds.
type Proxy struct {
	net      *Network
	node     string
	listenIP net.IP
	targetIP net.IP

	mu    sync.Mutex
	lns   map[int]net.Listener // TCP port -> listener; absent while down
	pcs   []*net.UDPConn
	conns map[*proxyConn]struct{}
	wg    sync.WaitGroup
	done  chan struct{}
}

// AddProxy starts a proxy for node: TCP on listenIP:port for each of
// tcpPorts and UDP on listenIP:port for each of udpPorts, forwarding to the
// same port on targetIP.
func (n *Network) AddProxy(node, listenIP, targetIP string, tcpPorts, udpPorts []int) (*Proxy, error) {
	p := &Proxy{
		net: n, node: node,
		listenIP: net.ParseIP(listenIP), targetIP: net.ParseIP(targetIP),
		lns: map[int]net.Listener{}, conns: map[*proxyConn]struct{}{}, done: make(chan struct{}),
	}
	if err := p.Up(tcpPorts...); err != nil {
		p.Close()
		return nil, err
	}
	for _, port := range udpPorts {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: p.listenIP, Port: port})
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("proxy of %s: %w", node, err)
		}
		p.pcs = append(p.pcs, pc)
		p.wg.Add(1)
		go p.serveUDP(pc, port)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		p.Close()
		return nil, errors.New("network is closed")
	}
	n.proxies = append(n.proxies, p)
	return p, nil
}

// Close stops the proxy and resets its connections.
func (p *Proxy) Close() {
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		return
	default:
	}
	close(p.done)
	for _, ln := range p.lns {
		ln.Close()
	}
	for _, pc := range p.pcs {
		pc.Close()
	}
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
	p.wg.Wait()
}

// Up listens on the given TCP ports again (or for the first time).
func (p *Proxy) Up(ports ...int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, port := range ports {
		if p.lns[port] != nil {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(p.listenIP.String(), strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("proxy of %s: %w", p.node, err)
		}
		p.lns[port] = ln
		p.wg.Add(1)
		go p.serveTCP(ln, port)
	}
	return nil
}

// Down stops listening on the given TCP ports, so that connecting to them
// is refused at once, as it is for a host whose process is not running:
// a client then knows its request was never sent. Connections already
// open stay until either side closes them.
func (p *Proxy) Down(ports ...int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, port := range ports {
		if ln := p.lns[port]; ln != nil {
			ln.Close()
			delete(p.lns, port)
		}
	}
}

// ResetConns resets every connection the proxy carries, as a restarted
// middlebox or a flapping route would.
func (p *Proxy) ResetConns() {
	p.mu.Lock()
	conns := make([]*proxyConn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	for _, c := range conns {
		c.reset()
	}
}

func (p *Proxy) serveTCP(ln net.Listener, port int) {
	defer p.wg.Done()
	target := net.JoinHostPort(p.targetIP.String(), strconv.Itoa(port))
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.handle(c.(*net.TCPConn), target)
		}()
	}
}

// handle proxies one accepted connection to target.
func (p *Proxy) handle(in *net.TCPConn, target string) {
	src := p.net.endpoint(in.RemoteAddr().(*net.TCPAddr).IP)
	fwd, back := Link{src, p.node}, Link{p.node, src}
	if p.net.Fault(fwd).Mode == Drop || p.net.Fault(back).Mode == Drop {
		resetConn(in)
		return
	}
	oc, err := net.DialTimeout("tcp", target, 5*time.Second)
	if err != nil {
		// The node is down: refuse like a closed port would.
		resetConn(in)
		return
	}
	out := oc.(*net.TCPConn)
	c := &proxyConn{in: in, out: out, dead: make(chan struct{})}
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		c.reset()
		return
	default:
	}
	p.conns[c] = struct{}{}
	p.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); p.pump(c, in, out, fwd) }()
	go func() { defer wg.Done(); p.pump(c, out, in, back) }()
	wg.Wait()
	c.close()
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// proxyConn is one proxied connection: in from the sender, out to the
// node.
type proxyConn struct {
	in, out *net.TCPConn
	once    sync.Once
	dead    chan struct{} // closed when the connection is torn down
}

// reset closes both sides with RST.
func (c *proxyConn) reset() {
	c.once.Do(func() {
		close(c.dead)
		resetConn(c.in)
		resetConn(c.out)
	})
}

func (c *proxyConn) close() {
	c.once.Do(func() {
		close(c.dead)
		c.in.Close()
		c.out.Close()
	})
}

func resetConn(c *net.TCPConn) {
	_ = c.SetLinger(0)
	c.Close()
}

type chunk struct {
	b  []byte
	at time.Time
}

// pump copies src to dst under the link's condition. Chunks are stamped
// with their release time when read and written in order; a blackholed
// link holds them, a dropped link resets the connection.
func (p *Proxy) pump(c *proxyConn, src, dst *net.TCPConn, l Link) {
	q := make(chan chunk, 64)
	dead := c.dead
	go func() {
		defer close(q)
		var last time.Time
		for {
			buf := make([]byte, 16<<10)
			n, err := src.Read(buf)
			if n > 0 {
				f := p.net.Fault(l)
				if f.Mode == Drop {
					c.reset()
					return
				}
				at := time.Now().Add(p.net.delay(f))
				if at.Before(last) {
					at = last
				}
				last = at
				select {
				case q <- chunk{b: buf[:n], at: at}:
				case <-dead:
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for ch := range q {
		if d := time.Until(ch.at); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-dead:
				return
			}
		}
		for {
			w := p.net.watch()
			f := p.net.Fault(l)
			if f.Mode == Drop {
				c.reset()
				return
			}
			if f.Mode != Blackhole {
				break
			}
			select {
			case <-w:
			case <-dead:
				return
			}
		}
		if _, err := dst.Write(ch.b); err != nil {
			c.reset()
			return
		}
	}
	// The sender closed its side: pass the half-close on.
	_ = dst.CloseWrite()
}

func (p *Proxy) serveUDP(pc *net.UDPConn, port int) {
	defer p.wg.Done()
	target := &net.UDPAddr{IP: p.targetIP, Port: port}
	for {
		buf := make([]byte, 64<<10)
		n, from, err := pc.ReadFromUDP(buf)
		if err != nil {
			return
		}
		f := p.net.Fault(Link{p.net.endpoint(from.IP), p.node})
		if f.Mode != Pass {
			continue
		}
		data := buf[:n]
		if d := p.net.delay(f); d > 0 {
			time.AfterFunc(d, func() { _, _ = pc.WriteToUDP(data, target) })
			continue
		}
		_, _ = pc.WriteToUDP(data, target)
	}
}
