package pglocal

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// The throwaway CA of the clusters a process starts without Options.CA:
// they all trust one another's certificates, like the regions of one
// federation.
var (
	defaultCAOnce sync.Once
	defaultCA     *tlsutil.CA
	defaultCAErr  error
)

func processCA() (*tlsutil.CA, error) {
	defaultCAOnce.Do(func() { defaultCA, defaultCAErr = tlsutil.NewCA("atomfed pglocal PostgreSQL CA") })
	return defaultCA, defaultCAErr
}

// RootCertName is the file in a cluster's directory holding the CA
// certificate that signs the server certificates of its federation.
const RootCertName = "root.crt"

// writeTLS issues the server's certificate and key into the data directory
// and writes the CA certificate to Dir/root.crt, readable by everyone (the
// server reads it for its subscriptions' sslrootcert, agents for theirs).
func (c *Cluster) writeTLS() error {
	if c.opts.NoTLS {
		return nil
	}
	ca := c.opts.CA
	if ca == nil {
		var err error
		if ca, err = processCA(); err != nil {
			return err
		}
	}
	dns, ips := []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	if len(c.opts.TLSNames) > 0 {
		dns, ips = c.opts.TLSNames, nil
	}
	certPEM, keyPEM, err := ca.Issue(dns[0], dns, ips)
	if err != nil {
		return err
	}
	crt, key := filepath.Join(c.DataDir, "server.crt"), filepath.Join(c.DataDir, "server.key")
	if err := os.WriteFile(crt, certPEM, 0o644); err != nil {
		return err
	}
	if err := c.writeSecretFile(key, string(keyPEM), true); err != nil {
		return err
	}
	if err := c.own(crt); err != nil {
		return err
	}
	c.RootCert = filepath.Join(c.Dir, RootCertName)
	return os.WriteFile(c.RootCert, ca.CertPEM, 0o644)
}

// hbaConf is the cluster's pg_hba.conf: the replication role may log in
// over TCP only with TLS (and a password, scram-sha-256), never for
// physical replication; the superuser and others with a password; local
// socket connections are trusted (the cluster is private to its user).
func (c *Cluster) hbaConf() string {
	repl := "hostssl"
	if c.opts.NoTLS {
		repl = "host"
	}
	lines := []string{
		"# pglocal: written by atomfed",
		"local all all trust",
		repl + " all " + ReplicationUser + " 127.0.0.1/32 scram-sha-256",
		repl + " all " + ReplicationUser + " ::1/128 scram-sha-256",
		"host all " + ReplicationUser + " all reject",
		"host all all 127.0.0.1/32 scram-sha-256",
		"host all all ::1/128 scram-sha-256",
	}
	return strings.Join(lines, "\n") + "\n"
}

func (c *Cluster) writeHBA() error {
	return os.WriteFile(filepath.Join(c.DataDir, "pg_hba.conf"), []byte(c.hbaConf()), 0o600)
}
