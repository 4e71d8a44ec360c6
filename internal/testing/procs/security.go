package procs

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// Token is the bootstrap management token (FEDERATION_TOKEN) of test
// clusters.
const Token = "atf_e2e_bootstrap_token"

// Security is a cluster's throwaway security material, as an operator
// would provision it: a federation CA with a certificate per node, a gossip
// key, the bootstrap token, and a signing key per member.
type Security struct {
	Dir       string
	CA        *tlsutil.CA
	CAPath    string
	GossipKey string // base64
	// GossipKeyFile holds GossipKey, for --encrypt-file.
	GossipKeyFile string
	// Plaintext runs the nodes with --insecure-plaintext (no TLS, no
	// gossip encryption; tokens and signatures still apply), for measuring
	// what the default security costs.
	Plaintext bool

	mu      sync.Mutex
	servers []string // HTTP URLs of the servers made with this material
	signers map[string]*signing.Signer
	keyDir  string
	hc      *http.Client // see get
}

// NewSecurity makes the material under dir/tls.
func NewSecurity(dir string) (*Security, error) {
	s := &Security{Dir: filepath.Join(dir, "tls"), signers: map[string]*signing.Signer{}, keyDir: filepath.Join(dir, "keys")}
	for _, d := range []string{s.Dir, s.keyDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	ca, err := tlsutil.NewCA("e2e CA")
	if err != nil {
		return nil, err
	}
	s.CA, s.CAPath = ca, filepath.Join(s.Dir, "ca.pem")
	if err := os.WriteFile(s.CAPath, ca.CertPEM, 0o644); err != nil {
		return nil, err
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	s.GossipKey = base64.StdEncoding.EncodeToString(k)
	s.GossipKeyFile = filepath.Join(s.Dir, "gossip.key")
	if err := os.WriteFile(s.GossipKeyFile, []byte(s.GossipKey+"\n"), 0o600); err != nil {
		return nil, err
	}
	return s, nil
}

// NodeFlags issues a certificate for a node (server or agent) on ip and
// returns the TLS and gossip flags of its command line.
func (s *Security) NodeFlags(name string, server bool, ips ...string) ([]string, error) {
	if s.Plaintext {
		return []string{"--insecure-plaintext"}, nil
	}
	role := tlsutil.AgentName
	if server {
		role = tlsutil.ServerName
	}
	var addrs []net.IP
	for _, ip := range append(ips, "127.0.0.1") {
		addrs = append(addrs, net.ParseIP(ip))
	}
	f, err := s.CA.WriteNode(s.Dir, name, s.CAPath, []string{name, role, "localhost"}, addrs)
	if err != nil {
		return nil, err
	}
	return []string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key, "--encrypt-file", s.GossipKeyFile}, nil
}

// Scheme is the URL scheme of the nodes' HTTP APIs: https, or http when
// Plaintext.
func (s *Security) Scheme() string {
	if s.Plaintext {
		return "http"
	}
	return "https"
}

// Env is the environment every process of the cluster gets.
func (s *Security) Env() []string { return []string{"FEDERATION_TOKEN=" + Token} }

func (s *Security) addServer(url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.servers = append(s.servers, url)
}

// AgentToken makes, through the servers made with this material, an agent
// token bound to node and region, as an operator provisions each agent
// (`atomfed token create --role agent --node N --region R`). It retries
// while a server answers without a leader (up to 20 s) and gives up at
// once when none is reachable.
func (s *Security) AgentToken(node, region string) (string, error) {
	s.mu.Lock()
	urls := append([]string(nil), s.servers...)
	s.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var last error
		noLeader := false
		for _, u := range urls {
			c, err := s.Client(u)
			if err != nil {
				return "", err
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			t, err := c.CreateAgentToken(ctx, node, region, "agent "+node)
			cancel()
			if err == nil {
				return t.Secret, nil
			}
			last = err
			noLeader = noLeader || client.StatusOf(err) == http.StatusServiceUnavailable
		}
		if last == nil {
			return "", fmt.Errorf("no server to make agent %s's token with", node)
		}
		if !noLeader || time.Now().After(deadline) {
			return "", fmt.Errorf("agent %s's token: %w", node, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Signer returns member's key, made on first use and written (unencrypted
// PKCS#8) to keys/<member>.key for CLI tests.
func (s *Security) Signer(member string) (*signing.Signer, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	path := filepath.Join(s.keyDir, member+".key")
	if k := s.signers[member]; k != nil {
		return k, path, nil
	}
	k, err := signing.NewSigner()
	if err != nil {
		return nil, "", err
	}
	pemKey, err := k.PrivatePEM()
	if err != nil {
		return nil, "", err
	}
	if err := os.WriteFile(path, pemKey, 0o600); err != nil {
		return nil, "", err
	}
	s.signers[member] = k
	return k, path, nil
}

// TLSConfig trusts the cluster's CA (for clients that are not
// client.Client, such as the load generator); nil when Plaintext.
func (s *Security) TLSConfig() *tls.Config {
	if s.Plaintext {
		return nil
	}
	cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: s.CAPath}, "")
	if err != nil {
		panic(fmt.Sprintf("CA %s: %v", s.CAPath, err))
	}
	return cfg
}

// Client returns a client of url with the bootstrap token and the CA, plus
// opts.
func (s *Security) Client(url string, opts ...client.Option) (*client.Client, error) {
	if s.Plaintext {
		return client.New(url, append([]client.Option{client.WithToken(Token)}, opts...)...)
	}
	cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: s.CAPath}, "")
	if err != nil {
		return nil, err
	}
	return client.New(url, append([]client.Option{client.WithToken(Token), client.WithTLS(cfg)}, opts...)...)
}

// SigningClient is Client with member's signing key.
func (s *Security) SigningClient(url, member string) (*client.Client, error) {
	k, _, err := s.Signer(member)
	if err != nil {
		return nil, err
	}
	return s.Client(url, client.WithSigner(k))
}

// MustSigningClient is SigningClient for tests, panicking on error (only a
// broken temp dir can make it fail).
func (s *Security) MustSigningClient(url, member string) *client.Client {
	c, err := s.SigningClient(url, member)
	if err != nil {
		panic(fmt.Sprintf("signing client for %s: %v", member, err))
	}
	return c
}

// get reads url (an /health or /metrics of a node) with a 3 s timeout,
// trusting the CA, with token as the bearer when it is set; an answer
// other than 200 is an error. The harness's client is made on first use
// and shared, so that repeated reads reuse their connections.
func (s *Security) get(ctx context.Context, url, token string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	hc, err := s.httpClient()
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	return b, err
}

func (s *Security) httpClient() (*http.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hc == nil {
		cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: s.CAPath}, "")
		if err != nil {
			return nil, err
		}
		s.hc = &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	}
	return s.hc, nil
}
