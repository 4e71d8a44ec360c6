package testcluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// Token is the bootstrap management token of every test cluster.
const Token = "atf_test_bootstrap_token"

// security is a test cluster's TLS, gossip and signing material: a fresh
// CA per cluster, a certificate per node, a gossip key, and a key per
// member (region, agent, approver), made on first use.
type security struct {
	dir       string
	ca        *tlsutil.CA
	caPath    string
	gossipKey []byte
	client    *tls.Config // trusts the CA, no client certificate

	mu      sync.Mutex
	signers map[string]*signing.Signer
}

func newSecurity(t testutil.TB) *security {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	ca, err := tlsutil.NewCA("test CA")
	if err != nil {
		t.Fatalf("test cluster security: %v", err)
	}
	s := &security{dir: dir, ca: ca, caPath: filepath.Join(dir, "ca.pem"), gossipKey: make([]byte, 32), signers: map[string]*signing.Signer{}}
	_, _ = rand.Read(s.gossipKey)
	if err := mkdirWrite(s.caPath, ca.CertPEM); err != nil {
		t.Fatalf("test cluster security: %v", err)
	}
	if s.client, err = tlsutil.ClientConfig(tlsutil.Files{CA: s.caPath}, ""); err != nil {
		t.Fatalf("test cluster security: %v", err)
	}
	return s
}

// files issues a certificate for a node; server certificates carry the
// name servers verify each other by.
func (s *security) files(name string, server bool) (tlsutil.Files, error) {
	role := tlsutil.AgentName
	if server {
		role = tlsutil.ServerName
	}
	return s.ca.WriteNode(s.dir, name, s.caPath, []string{name, role, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
}

// serverTLS returns the HTTP listener config, the raft transport config and
// the forwarding client config of a server.
func (s *security) serverTLS(name string) (*tls.Config, *cluster.TLSConfig, *tls.Config, error) {
	f, err := s.files(name, true)
	if err != nil {
		return nil, nil, nil, err
	}
	httpCfg, err := tlsutil.ServerConfig(f, false)
	if err != nil {
		return nil, nil, nil, err
	}
	rs, err := tlsutil.ServerConfig(f, true)
	if err != nil {
		return nil, nil, nil, err
	}
	rc, err := tlsutil.ClientConfig(f, tlsutil.ServerName)
	if err != nil {
		return nil, nil, nil, err
	}
	fwd, err := tlsutil.ClientConfig(f, "")
	return httpCfg, &cluster.TLSConfig{Server: rs, Client: rc}, fwd, err
}

// Signer returns the test key of a member (a region, agent or approver),
// made on first use.
func (c *Cluster) Signer(member string) *signing.Signer {
	c.sec.mu.Lock()
	defer c.sec.mu.Unlock()
	if s := c.sec.signers[member]; s != nil {
		return s
	}
	s, err := signing.NewSigner()
	if err != nil {
		c.t.Fatalf("signer for %s: %v", member, err)
	}
	c.sec.signers[member] = s
	return s
}

// ClientTLS is the TLS config a client of the cluster uses.
func (c *Cluster) ClientTLS() *tls.Config { return c.sec.client }

// CAPath is the cluster CA's certificate file.
func (c *Cluster) CAPath() string { return c.sec.caPath }

// NewClient returns a client of n with the bootstrap token and opts (for
// example a signer).
func (c *Cluster) NewClient(n *Node, opts ...client.Option) *client.Client {
	cl, err := client.New(n.URL, append([]client.Option{client.WithToken(Token), client.WithTLS(c.sec.client)}, opts...)...)
	if err != nil {
		c.t.Fatalf("client of %s: %v", n.ID, err)
	}
	return cl
}

// RegionClient returns a client of n that signs with region's key, as the
// region's own tooling would.
func (c *Cluster) RegionClient(n *Node, region string) *client.Client {
	return c.NewClient(n, client.WithSigner(c.Signer(region)))
}

// SignBody returns a signed body for member (the payload plus extra fields
// and the envelope) and its signature, for raw requests.
func (c *Cluster) SignBody(member string, payload any, extra map[string]any) ([]byte, string) {
	b, sig, err := client.SignBody(c.Signer(member), payload, extra)
	if err != nil {
		c.t.Fatalf("sign body for %s: %v", member, err)
	}
	return b, sig
}

// RegisterRegion registers a region signed with its own key through any
// running server, retrying while there is no leader.
func (c *Cluster) RegisterRegion(r *fsm.Region) *fsm.Region {
	c.t.Helper()
	var out *fsm.Region
	testutil.Eventually(c.t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var err error
		out, err = c.RegionClient(c.Running()[0], r.Name).RegisterRegion(ctx, r, nil)
		if st := client.StatusOf(err); err != nil && st != 0 && st != http.StatusServiceUnavailable {
			c.t.Fatalf("register region %s: %v", r.Name, err)
		}
		return err
	})
	return out
}

// ungatePolicy sets a policy that gates no action, so tests about other
// things can delete regions directly. Tests of approvals set their own.
func (c *Cluster) ungatePolicy() {
	c.t.Helper()
	testutil.Eventually(c.t, 20*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.WaitLeader().Client.SetPolicy(ctx, &fsm.Policy{SkewSeconds: 300, RotationOverlapSeconds: 3600})
		if st := client.StatusOf(err); err != nil && st != 0 && st != http.StatusServiceUnavailable {
			c.t.Fatalf("set policy: %v", err)
		}
		return err
	})
}

func mkdirWrite(path string, b []byte) error {
	if err := mkdirAll(filepath.Dir(path)); err != nil {
		return err
	}
	return writeFile(path, b)
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, 0o700) }

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o600) }

// RegionClient returns a client of this node that signs with region's key.
func (n *Node) RegionClient(region string) *client.Client { return n.c.RegionClient(n, region) }

// Cluster returns the node's cluster.
func (n *Node) Cluster() *Cluster { return n.c }

// ServerCertificate issues a server certificate of the cluster's CA, for
// tests that play a peer.
func (c *Cluster) ServerCertificate(name string) tls.Certificate {
	certPEM, keyPEM, err := c.sec.ca.Issue(name, []string{name, tlsutil.ServerName}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		c.t.Fatalf("certificate for %s: %v", name, err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		c.t.Fatalf("certificate for %s: %v", name, err)
	}
	return cert
}
