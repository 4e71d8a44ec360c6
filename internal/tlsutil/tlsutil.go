// Package tlsutil makes and loads the federation's TLS material: a CA,
// node certificates signed by it, and the tls.Configs servers, agents and
// clients use (mutual TLS between servers).
package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// ServerName is a name every server certificate carries; servers dial each
// other with it, so any server of the federation's CA is accepted and a
// certificate made for an agent or a client is not.
const ServerName = "server.atomfed"

// AgentName is the name agent certificates carry.
const AgentName = "agent.atomfed"

// Files names a node's TLS material.
type Files struct {
	CA   string // the federation CA certificate (PEM)
	Cert string // this node's certificate (PEM)
	Key  string // this node's private key (PEM)
}

// Enabled reports whether any TLS material is configured.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// Validate checks that the files exist and the set is complete.
func (f Files) Validate() error {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return errors.New("TLS needs --tls-ca, --tls-cert and --tls-key together (or --insecure-plaintext for local experiments)")
	}
	for _, p := range []string{f.CA, f.Cert, f.Key} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("TLS file: %w", err)
		}
	}
	return nil
}

// CA is a certificate authority that issues node certificates.
type CA struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
}

// NewCA makes a throwaway federation CA valid for ten years.
func NewCA(name string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"atomfed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}, nil
}

// Issue makes a certificate for a node, valid as both a TLS server and a
// client, for the given DNS names and IP addresses; it returns the
// certificate and key PEM.
func (ca *CA) Issue(commonName string, dnsNames []string, ips []net.IP) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: commonName, Organization: []string{"atomfed"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(2 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// WriteNode issues a certificate and writes dir/<name>.pem and
// dir/<name>-key.pem (0600), returning the files with the CA's path.
func (ca *CA) WriteNode(dir, name, caPath string, dnsNames []string, ips []net.IP) (Files, error) {
	certPEM, keyPEM, err := ca.Issue(name, dnsNames, ips)
	if err != nil {
		return Files{}, err
	}
	f := Files{CA: caPath, Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
	if err := os.WriteFile(f.Cert, certPEM, 0o644); err != nil {
		return Files{}, err
	}
	if err := os.WriteFile(f.Key, keyPEM, 0o600); err != nil {
		return Files{}, err
	}
	return f, nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

// Pool loads a CA certificate file into a pool.
func Pool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read CA %s: %w", caFile, err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return p, nil
}

// ServerConfig is the TLS config of a listener: this node's certificate,
// and client certificates verified against the CA; requireClient makes a
// client certificate mandatory (the Raft transport), else it is verified
// when given (the HTTP API, where tokens authenticate clients).
func ServerConfig(f Files, requireClient bool) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate: %w", err)
	}
	pool, err := Pool(f.CA)
	if err != nil {
		return nil, err
	}
	auth := tls.VerifyClientCertIfGiven
	if requireClient {
		auth = tls.RequireAndVerifyClientCert
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: auth, MinVersion: tls.VersionTLS12}, nil
}

// ClientConfig is the TLS config of a dialer that trusts the CA and, when
// f has a certificate, presents it. serverName, when set, is the name the
// peer's certificate must carry (ServerName for server-to-server links).
func ClientConfig(f Files, serverName string) (*tls.Config, error) {
	pool, err := Pool(f.CA)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if f.Cert != "" {
		cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load TLS certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// PeerIsServer reports whether a TLS connection's verified client
// certificate names a server of the federation.
func PeerIsServer(st *tls.ConnectionState) bool {
	if st == nil || len(st.VerifiedChains) == 0 {
		return false
	}
	for _, n := range st.VerifiedChains[0][0].DNSNames {
		if n == ServerName {
			return true
		}
	}
	return false
}

// ServerOnly returns a copy of a listener's config that completes a
// handshake only with a federation server: the client certificate must be
// verified against the CA and name ServerName. Agents, operators and
// anything else holding a certificate of the same CA are refused during
// the handshake, before they can send a byte (the Raft port carries Raft
// and the leader-forwarding RPC, which only servers may use).
func ServerOnly(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	c.ClientAuth = tls.RequireAndVerifyClientCert
	c.VerifyConnection = func(st tls.ConnectionState) error {
		if PeerIsServer(&st) {
			return nil
		}
		var who string
		if len(st.PeerCertificates) > 0 {
			leaf := st.PeerCertificates[0]
			who = fmt.Sprintf(" (%s, names %v)", leaf.Subject.CommonName, leaf.DNSNames)
		}
		return fmt.Errorf("the peer's certificate%s does not name %s: only federation servers may connect here", who, ServerName)
	}
	return c
}
