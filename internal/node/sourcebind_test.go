package node

import (
	"net"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// TestGossipDialsFromBindAddress: Serf's memberlist transport, bound to one
// specific address, opens its TCP streams from it, and its UDP packets
// leave from it too.
func TestGossipDialsFromBindAddress(t *testing.T) {
	peer, from := testutil.AcceptFrom(t)
	conf, err := serfConfig(SerfOptions{Name: "n1", Bind: "127.0.0.24:0"})
	if err != nil {
		t.Fatal(err)
	}
	gt, ok := conf.MemberlistConfig.Transport.(*gossipTransport)
	if !ok {
		t.Fatalf("memberlist transport is %T, want *gossipTransport", conf.MemberlistConfig.Transport)
	}
	defer gt.Shutdown()
	if conf.MemberlistConfig.BindPort == 0 {
		t.Fatal("bind port 0 was not replaced by the port the transport got")
	}
	c, err := gt.DialTimeout(peer, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	testutil.WantSource(t, from, "127.0.0.24")

	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := gt.WriteTo([]byte("ping"), pc.LocalAddr().String()); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	_, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if ip := addr.(*net.UDPAddr).IP.String(); ip != "127.0.0.24" {
		t.Fatalf("gossip packet came from %s, want 127.0.0.24", ip)
	}
}

// TestWildcardBindLeavesSourceToKernel: a wildcard or named bind host is
// not pinned, so the default transports stay in place.
func TestWildcardBindLeavesSourceToKernel(t *testing.T) {
	for _, host := range []string{"0.0.0.0", "::", "localhost", ""} {
		if ip := SpecificIP(host); ip != nil {
			t.Errorf("SpecificIP(%q) = %s, want nil", host, ip)
		}
	}
	if ip := SpecificIP("10.0.0.1"); ip == nil || ip.String() != "10.0.0.1" {
		t.Errorf("SpecificIP(10.0.0.1) = %v", ip)
	}
	conf, err := serfConfig(SerfOptions{Name: "n1", Bind: "0.0.0.0:0"})
	if err != nil {
		t.Fatal(err)
	}
	if conf.MemberlistConfig.Transport != nil {
		t.Fatalf("a wildcard bind got transport %T; want memberlist's own", conf.MemberlistConfig.Transport)
	}
}
