package httpapi_test

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/testing/testcluster"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestTLS checks that the API only speaks TLS with the federation's
// certificates, and that the Raft transport demands a client certificate
// of the federation CA (mutual TLS).
func TestTLS(t *testing.T) {
	c := testcluster.New(t, testcluster.Options{})
	n := c.WaitLeader()
	ctx := testcluster.Ctx(t, 30*time.Second)

	// A client that trusts the CA works; one that does not is refused.
	if _, err := n.Client.Health(ctx); err != nil {
		t.Fatalf("client with the CA: %v", err)
	}
	plain, _ := client.New(n.URL, client.WithToken(testcluster.Token))
	if _, err := plain.Health(ctx); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("client without the CA: %v, want a certificate error", err)
	}
	// Plain HTTP to the TLS port gets no API answer.
	insecure, _ := client.New(strings.Replace(n.URL, "https://", "http://", 1), client.WithToken(testcluster.Token))
	if _, err := insecure.Health(ctx); err == nil {
		t.Fatal("plain HTTP to the API port was answered")
	}

	// Raft: a peer without a client certificate, or with one from another
	// CA, cannot complete a handshake.
	raftAddr := n.Server.RaftAddr()
	other, err := tlsutil.NewCA("other")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := other.Issue("rogue", []string{tlsutil.ServerName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	trusted := c.ClientTLS().Clone()
	trusted.ServerName = tlsutil.ServerName
	for name, cfg := range map[string]*tls.Config{
		"no client certificate":         trusted,
		"a certificate from another CA": withCert(trusted, rogue),
	} {
		err := raftHandshake(raftAddr, cfg)
		if err == nil {
			t.Errorf("raft transport accepted a peer with %s", name)
		}
	}
}

func withCert(cfg *tls.Config, cert tls.Certificate) *tls.Config {
	c := cfg.Clone()
	c.Certificates = []tls.Certificate{cert}
	return c
}

// raftHandshake dials the raft port and completes a TLS handshake plus one
// read, which fails when the server refuses the client certificate (TLS
// 1.3 reports that after the handshake).
func raftHandshake(addr string, cfg *tls.Config) error {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	// An AppendEntries RPC type byte; a refused peer gets a TLS alert.
	if _, err := conn.Write([]byte{0}); err != nil {
		return err
	}
	buf := make([]byte, 1)
	_, err = conn.Read(buf)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return nil // the server kept reading: the peer was accepted
	}
	return err
}
