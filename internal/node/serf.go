package node

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/memberlist"
	"github.com/hashicorp/serf/serf"
)

// SerfOptions configure the Serf member of a node.
type SerfOptions struct {
	// Name is the node's name; DataDir holds Serf's snapshot (serf/).
	Name, DataDir string
	// Bind and Advertise are host:port gossip addresses (Advertise may be
	// empty: the bind address is advertised).
	Bind, Advertise string
	// GossipKey, when set, encrypts and verifies all gossip.
	GossipKey []byte
	// Memberlist replaces the default LAN memberlist settings (tests).
	Memberlist *memberlist.Config
	Tags       map[string]string
	EventCh    chan<- serf.Event
	Logger     hclog.Logger
}

// StartSerf creates the node's Serf member: memberlist bound to the bind
// address (outgoing streams too, when it is one specific IP), gossip
// encrypted with the key, the snapshot under DataDir/serf. If Serf does
// not start, the gossip transport it bound is released.
func StartSerf(o SerfOptions) (*serf.Serf, error) {
	if err := os.MkdirAll(filepath.Join(o.DataDir, "serf"), 0o700); err != nil {
		return nil, fmt.Errorf("create serf dir: %w", err)
	}
	conf, err := serfConfig(o)
	if err != nil {
		return nil, err
	}
	sf, err := serf.Create(conf)
	if err != nil {
		if t, ok := conf.MemberlistConfig.Transport.(*gossipTransport); ok {
			_ = t.Shutdown()
		}
		return nil, fmt.Errorf("start serf on %s: %w", o.Bind, err)
	}
	return sf, nil
}

func serfConfig(o SerfOptions) (*serf.Config, error) {
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	conf := serf.DefaultConfig()
	conf.NodeName = o.Name
	if o.Memberlist != nil {
		c := *o.Memberlist
		conf.MemberlistConfig = &c
	}
	mc := conf.MemberlistConfig
	mc.Name = o.Name
	host, port, err := splitHostPort(o.Bind)
	if err != nil {
		return nil, fmt.Errorf("serf bind address %q: %w", o.Bind, err)
	}
	mc.BindAddr, mc.BindPort = host, port
	if o.Advertise != "" {
		ah, ap, err := splitHostPort(o.Advertise)
		if err != nil {
			return nil, fmt.Errorf("serf advertise address %q: %w", o.Advertise, err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ah, ap
	}
	std := o.Logger.Named("serf").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	conf.Logger = std
	mc.Logger = std
	if len(o.GossipKey) > 0 {
		mc.SecretKey = o.GossipKey
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	conf.LogOutput = nil
	mc.LogOutput = nil
	conf.EnableNameConflictResolution = true
	conf.Tags = o.Tags
	conf.EventCh = o.EventCh
	conf.SnapshotPath = filepath.Join(o.DataDir, "serf", "local.snapshot")
	if ip := SpecificIP(host); ip != nil && mc.Transport == nil {
		t, bound, err := newGossipTransport(ip, port, std)
		if err != nil {
			return nil, err
		}
		mc.Transport, mc.BindPort = t, bound
	}
	return conf, nil
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("port %q is not a number", p)
	}
	return h, port, nil
}
