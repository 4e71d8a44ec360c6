package e2e_test

import (
	"crypto/tls"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// TestOnlyServersOpenTheRaftPort attacks a real three-process TLS cluster
// on its Raft port (which also carries the leader-forwarding RPC) with
// certificates of the federation's own CA: an agent's and an operator
// tool's are refused in the handshake, before a byte of Raft or of the
// forwarding RPC is read; a server's completes it.
func TestOnlyServersOpenTheRaftPort(t *testing.T) {
	c := startCluster(t)
	leader := waitLeader(t, c)
	dir := t.TempDir()
	cert := func(name string, names ...string) tlsutil.Files {
		t.Helper()
		f, err := c.Sec.CA.WriteNode(dir, name, c.Sec.CAPath, append([]string{name}, names...), []net.IP{net.ParseIP("127.0.0.1")})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	dial := func(f tlsutil.Files, addr string) error {
		cfg, err := tlsutil.ClientConfig(f, tlsutil.ServerName)
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// TLS 1.3: the server's verdict on the client certificate arrives
		// with the first read.
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := conn.Write([]byte{0xA7}); err != nil {
			return err
		}
		_, err = conn.Read(make([]byte, 1))
		return err
	}
	for _, s := range c.Servers {
		for _, attacker := range []struct {
			name  string
			files tlsutil.Files
		}{
			{"an agent's certificate", cert("rogue-agent", tlsutil.AgentName)},
			{"an operator tool's certificate", cert("rogue-tool")},
		} {
			err := dial(attacker.files, s.Config.RaftAddr)
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s on %s's Raft port: %v, want the handshake refused over the certificate", attacker.name, s.ID(), err)
			}
		}
	}
	// A server's certificate completes the handshake (the forwarding RPC
	// then waits for a frame: the read times out rather than failing on
	// the certificate).
	err := dial(cert("another-server", tlsutil.ServerName), leader.Config.RaftAddr)
	if err != nil && strings.Contains(err.Error(), "certificate") {
		t.Fatalf("a server's certificate was refused: %v", err)
	}
}

// TestSecretsStayOffTheCommandLine: the gossip key is never taken from the
// command line, where every user of the host reads it (ps, /proc), and no
// secret of the environment shows in --help.
func TestSecretsStayOffTheCommandLine(t *testing.T) {
	const key = "c2VjcmV0LWdvc3NpcC1rZXktMzItYnl0ZXMtbG9uZyE="
	r := cli(t, []string{"FEDERATION_TOKEN=atf_secret_token_value"}, "server", "--encrypt", key, "--node", "n1", "--data-dir", t.TempDir())
	if r.code == 0 || !strings.Contains(r.stderr, "--encrypt-file") || strings.Contains(r.stderr, key) {
		t.Fatalf("server --encrypt KEY: exit %d, %s; want it refused, naming --encrypt-file, without echoing the key", r.code, r.stderr)
	}
	for _, args := range [][]string{{"server", "--help"}, {"agent", "--help"}, {"region", "list", "--help"}, {"report", "--help"}} {
		h := cli(t, []string{"FEDERATION_TOKEN=atf_secret_token_value", "ATOMFED_GOSSIP_KEY=" + key}, args...)
		if out := h.stdout + h.stderr; strings.Contains(out, "atf_secret_token_value") || strings.Contains(out, key) {
			t.Fatalf("atomfed %s prints a secret of the environment:\n%s", strings.Join(args, " "), out)
		}
	}
}
