package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

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
	GossipKey string // base64, from --encrypt-file or ATOMFED_GOSSIP_KEY
	// GossipKeyFile holds the base64 gossip key (--encrypt-file).
	GossipKeyFile string
	// gossipKeyFlag is the refused --encrypt: a key on the command line
	// is visible to every user of the host (ps, /proc).
	gossipKeyFlag string
	Token         string // FEDERATION_TOKEN
	KeyPath       string // COSIGN_KEY_PATH
}

func addSecurityFlags(f *pflag.FlagSet, s *securityOptions) {
	f.StringVar(&s.TLS.CA, "tls-ca", os.Getenv("ATOMFED_TLS_CA"), "federation CA certificate (PEM) (env ATOMFED_TLS_CA)")
	f.StringVar(&s.TLS.Cert, "tls-cert", os.Getenv("ATOMFED_TLS_CERT"), "this node's certificate, signed by the federation CA (env ATOMFED_TLS_CERT)")
	f.StringVar(&s.TLS.Key, "tls-key", os.Getenv("ATOMFED_TLS_KEY"), "this node's certificate key (env ATOMFED_TLS_KEY)")
	f.BoolVar(&s.Insecure, "insecure-plaintext", false, "serve HTTP, Raft and gossip without TLS or encryption (local experiments only)")
	f.StringVar(&s.GossipKeyFile, "encrypt-file", "", "file holding the base64 32-byte key that encrypts Serf gossip, the same on every node (else env ATOMFED_GOSSIP_KEY; make one with: openssl rand -base64 32 > gossip.key; chmod 600 gossip.key)")
	f.StringVar(&s.gossipKeyFlag, "encrypt", "", "refused: a key on the command line is visible to every user of the host; use --encrypt-file or ATOMFED_GOSSIP_KEY")
	_ = f.MarkHidden("encrypt")
}

// gossipKey returns the base64 gossip key: from --encrypt-file, else
// ATOMFED_GOSSIP_KEY, else the GossipKey set by atomfed dev.
func (o securityOptions) gossipKey() (string, error) {
	if o.gossipKeyFlag != "" {
		return "", errors.New("--encrypt puts the gossip key on the command line, where every user of the host can read it (ps, /proc): put it in a file and pass --encrypt-file, or set ATOMFED_GOSSIP_KEY")
	}
	if o.GossipKeyFile != "" {
		b, err := os.ReadFile(o.GossipKeyFile)
		if err != nil {
			return "", fmt.Errorf("--encrypt-file: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if k := os.Getenv("ATOMFED_GOSSIP_KEY"); k != "" {
		return k, nil
	}
	return o.GossipKey, nil
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
	var err error
	if o.GossipKey, err = o.gossipKey(); err != nil {
		return nil, err
	}
	if o.Insecure {
		log.Warn("*** --insecure-plaintext: HTTP, Raft and gossip are NOT encrypted and peers are NOT authenticated by certificate. Use only for local experiments. ***")
		if server {
			log.Warn("*** --insecure-plaintext: servers have no identity to verify, so the gossip key is trusted: any member holding it that tags itself role=server is made a Raft voter. Plaintext is for local experiments and benchmarks only. ***")
		}
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
			return nil, errors.New("gossip must be encrypted: give --encrypt-file (a file holding a base64 32-byte key) or ATOMFED_GOSSIP_KEY, the same key on every node (openssl rand -base64 32)")
		}
	}
	if o.GossipKey != "" {
		k, err := base64.StdEncoding.DecodeString(o.GossipKey)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, errors.New("the gossip key (--encrypt-file or ATOMFED_GOSSIP_KEY) must be a base64 key of 16, 24 or 32 bytes")
		}
		sec.gossipKey = k
	}
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
