package tlsutil

import (
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServerOnlyRefusesOtherCertificatesOfTheCA: a ServerOnly listener
// completes the handshake with a server's certificate and refuses an
// agent's, one with no role and none at all, naming the reason.
func TestServerOnlyRefusesOtherCertificatesOfTheCA(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("test CA")
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, ca.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	node := func(name string, names ...string) Files {
		f, err := ca.WriteNode(dir, name, caPath, append([]string{name}, names...), []net.IP{net.ParseIP("127.0.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	srv, err := ServerConfig(node("s1", ServerName), true)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", ServerOnly(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 1)
				if _, err := c.Read(buf); err == nil {
					_, _ = c.Write(buf)
				}
			}()
		}
	}()
	try := func(f Files) error {
		cfg, err := ClientConfig(f, ServerName)
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte{1}); err != nil {
			return err
		}
		_, err = c.Read(make([]byte, 1))
		return err
	}
	if err := try(node("s2", ServerName)); err != nil {
		t.Fatalf("a server's certificate: %v", err)
	}
	for name, f := range map[string]Files{
		"an agent's certificate": node("a1", AgentName),
		"a certificate, no role": node("tool"),
		"no certificate":         {CA: caPath},
	} {
		if err := try(f); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("%s: %v, want the handshake refused", name, err)
		}
	}
}
