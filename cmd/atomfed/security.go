package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/go-hclog"
	"github.com/spf13/pflag"

	"github.com/atomcloud/atomfed/cluster"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// securityOptions are the TLS, gossip-encryption, token and key settings of
// a server or an agent.
type securityOptions struct {
	TLS       tlsutil.Files
	Insecure  bool   // --insecure-plaintext
	GossipKey string // base64, --encrypt or ATOMFED_GOSSIP_KEY
	Token     string // FEDERATION_TOKEN
	KeyPath   string // COSIGN_KEY_PATH
}

func addSecurityFlags(f *pflag.FlagSet, s *securityOptions) {
	f.StringVar(&s.TLS.CA, "tls-ca", os.Getenv("ATOMFED_TLS_CA"), "federation CA certificate (PEM) (env ATOMFED_TLS_CA)")
	f.StringVar(&s.TLS.Cert, "tls-cert", os.Getenv("ATOMFED_TLS_CERT"), "this node's certificate, signed by the federation CA (env ATOMFED_TLS_CERT)")
	f.StringVar(&s.TLS.Key, "tls-key", os.Getenv("ATOMFED_TLS_KEY"), "this node's certificate key (env ATOMFED_TLS_KEY)")
	f.BoolVar(&s.Insecure, "insecure-plaintext", false, "serve HTTP, Raft and gossip without TLS or encryption (local experiments only)")
	f.StringVar(&s.GossipKey, "encrypt", os.Getenv("ATOMFED_GOSSIP_KEY"), "base64 32-byte key encrypting Serf gossip (env ATOMFED_GOSSIP_KEY; make one with: openssl rand -base64 32)")
}

// security is resolved security material.
type security struct {
	httpServer *tls.Config        // HTTP API listener
	raft       *cluster.TLSConfig // servers only
	client     *tls.Config        // calls to servers (forwarding, agents, CLI)
	roots      *x509.CertPool     // for probes: system roots plus the CA
	gossipKey  []byte
	signer     *signing.Signer
	scheme     string
}

// resolve loads the TLS files, the gossip key and the node's signing key
// (COSIGN_KEY_PATH, or dataDir/keyFile, made on first start). Without
// --insecure-plaintext, TLS and a gossip key are required.
func (o securityOptions) resolve(dataDir, keyFile string, server bool, log hclog.Logger) (*security, error) {
	sec := &security{scheme: "http"}
	if o.Insecure {
		log.Warn("*** --insecure-plaintext: HTTP, Raft and gossip are NOT encrypted and peers are NOT authenticated by certificate. Use only for local experiments. ***")
	} else {
		if err := o.TLS.Validate(); err != nil {
			return nil, err
		}
		var err error
		if sec.httpServer, err = tlsutil.ServerConfig(o.TLS, false); err != nil {
			return nil, err
		}
		if sec.client, err = tlsutil.ClientConfig(o.TLS, ""); err != nil {
			return nil, err
		}
		if server {
			rs, err := tlsutil.ServerConfig(o.TLS, true)
			if err != nil {
				return nil, err
			}
			rc, err := tlsutil.ClientConfig(o.TLS, tlsutil.ServerName)
			if err != nil {
				return nil, err
			}
			sec.raft = &cluster.TLSConfig{Server: rs, Client: rc}
		}
		if sec.roots, err = x509.SystemCertPool(); err != nil || sec.roots == nil {
			sec.roots = x509.NewCertPool()
		}
		ca, err := os.ReadFile(o.TLS.CA)
		if err != nil {
			return nil, err
		}
		sec.roots.AppendCertsFromPEM(ca)
		sec.scheme = "https"
		if o.GossipKey == "" {
			return nil, errors.New("gossip must be encrypted: give --encrypt (or ATOMFED_GOSSIP_KEY) a base64 32-byte key, the same on every node (openssl rand -base64 32)")
		}
	}
	if o.GossipKey != "" {
		k, err := base64.StdEncoding.DecodeString(o.GossipKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, errors.New("--encrypt must be a base64 key of 16, 24 or 32 bytes")
		}
		sec.gossipKey = k
	}
	var err error
	sec.signer, err = loadOrCreateSigner(o.KeyPath, filepath.Join(dataDir, keyFile))
	if err != nil {
		return nil, err
	}
	return sec, nil
}

// loadOrCreateSigner loads the key at keyPath (cosign format, password from
// COSIGN_PASSWORD), or else the node's own key at fallback, made on first
// start (0600).
func loadOrCreateSigner(keyPath, fallback string) (*signing.Signer, error) {
	if keyPath != "" {
		s, err := signing.LoadSigner(keyPath, []byte(os.Getenv(signing.PasswordEnv)))
		if err != nil {
			return nil, fmt.Errorf("COSIGN_KEY_PATH: %w", err)
		}
		return s, nil
	}
	if b, err := os.ReadFile(fallback); err == nil {
		return signing.ParseSigner(b, nil)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	s, err := signing.NewSigner()
	if err != nil {
		return nil, err
	}
	pemKey, err := s.PrivatePEM()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(fallback), 0o700); err != nil {
		return nil, err
	}
	return s, os.WriteFile(fallback, pemKey, 0o600)
}
