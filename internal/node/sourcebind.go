package node

import (
	"fmt"
	"log"
	"net"
	"strings"
	"time"

	"github.com/hashicorp/memberlist"
)

// Outgoing cluster connections leave from the bind address.
//
// When a server or agent binds its Raft or Serf listener to one specific
// address, its outgoing Raft and gossip TCP connections are bound to that
// address too, as gossip's UDP packets already are (they leave from the
// bound socket). On a multi-homed host this keeps the source address of all
// of a node's cluster traffic equal to the address its peers know it by:
// firewall rules written for that address hold in both directions, and the
// chaos suite's per-link fault proxies, which tell nodes apart by source
// address, see one address per node. A wildcard bind (0.0.0.0, ::) or a
// host name leaves the choice of source address to the kernel.

// SpecificIP returns the IP of a bind host when it is one specific address,
// or nil for a wildcard, a name or an empty host.
func SpecificIP(host string) net.IP {
	ip := net.ParseIP(host)
	if ip == nil || ip.IsUnspecified() {
		return nil
	}
	return ip
}

// SourceDialer returns a dialer whose connections leave from ip (any
// port), or a plain dialer when ip is nil.
func SourceDialer(ip net.IP, timeout time.Duration) *net.Dialer {
	d := &net.Dialer{Timeout: timeout}
	if ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return d
}

// gossipTransport is memberlist's NetTransport whose outgoing TCP streams
// (push-pull syncs, TCP fallback pings, joins) leave from the bind address.
type gossipTransport struct {
	*memberlist.NetTransport
	source net.IP
}

var _ memberlist.NodeAwareTransport = (*gossipTransport)(nil)

// DialTimeout opens a stream to a member from the bind address.
func (t *gossipTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return SourceDialer(t.source, timeout).Dial("tcp", addr)
}

// DialAddressTimeout opens a stream to a member from the bind address.
func (t *gossipTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// newGossipTransport binds memberlist's UDP and TCP listeners to ip:port and
// returns the transport with the port it got. Port 0 picks a free port; as
// memberlist itself does, it retries when the port the TCP listener got is
// taken for UDP.
func newGossipTransport(ip net.IP, port int, logger *log.Logger) (*gossipTransport, int, error) {
	tries := 1
	if port == 0 {
		tries = 10
	}
	var err error
	for i := 0; i < tries; i++ {
		var nt *memberlist.NetTransport
		nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{
			BindAddrs: []string{ip.String()},
			BindPort:  port,
			Logger:    logger,
		})
		if err == nil {
			return &gossipTransport{NetTransport: nt, source: ip}, nt.GetAutoBindPort(), nil
		}
		if !strings.Contains(err.Error(), "address already in use") {
			break
		}
	}
	return nil, 0, fmt.Errorf("gossip transport on %s port %d: %w", ip, port, err)
}
