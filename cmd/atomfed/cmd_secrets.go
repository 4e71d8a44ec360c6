package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// federationSecrets is the material a new federation starts from: a CA,
// one server certificate, one agent certificate, the gossip key and the
// bootstrap token. Each file is one entry of files (name -> content).
type federationSecrets struct {
	caKey []byte
	files map[string][]byte
}

// secretsOptions say which names and addresses the certificates carry.
type secretsOptions struct {
	serverNames, serverIPs, agentNames []string
}

func newFederationSecrets(o secretsOptions) (*federationSecrets, error) {
	ca, err := tlsutil.NewCA("atomfed federation CA")
	if err != nil {
		return nil, err
	}
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
	for _, s := range o.serverIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("--server-ip %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	// A server certificate must carry server.atomfed and the node name
	// of every server that presents it (the leader admits a voter only
	// with a certificate naming it); the names clients dial go with them.
	serverCN := tlsutil.ServerName
	if len(o.serverNames) > 0 {
		serverCN = o.serverNames[0]
	}
	scert, skey, err := ca.Issue(serverCN, append([]string{tlsutil.ServerName, "localhost"}, o.serverNames...), ips)
	if err != nil {
		return nil, err
	}
	acert, akey, err := ca.Issue(tlsutil.AgentName, append([]string{tlsutil.AgentName, "localhost"}, o.agentNames...), ips[:2])
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	gossip := make([]byte, 32)
	token := make([]byte, 32)
	if _, err := rand.Read(gossip); err != nil {
		return nil, err
	}
	if _, err := rand.Read(token); err != nil {
		return nil, err
	}
	return &federationSecrets{
		caKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		files: map[string][]byte{
			"ca.pem": ca.CertPEM, "server.pem": scert, "server-key.pem": skey, "agent.pem": acert, "agent-key.pem": akey,
			"gossip.key":       []byte(base64.StdEncoding.EncodeToString(gossip) + "\n"),
			"federation-token": []byte("atf_" + hex.EncodeToString(token) + "\n"),
		},
	}, nil
}

// secretGroups are the Kubernetes Secrets the material goes into, and the
// keys (file names) each holds; the Helm chart mounts them by these keys.
var secretGroups = []struct {
	flag string
	keys map[string]string // Secret key -> file
}{
	{"tls-secret", map[string]string{"ca.pem": "ca.pem", "server.pem": "server.pem", "server-key.pem": "server-key.pem", "agent.pem": "agent.pem", "agent-key.pem": "agent-key.pem"}},
	{"gossip-secret", map[string]string{"gossip.key": "gossip.key"}},
	{"token-secret", map[string]string{"token": "federation-token"}},
}

func newSecretsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "secrets", Short: "Make a new federation's TLS material, gossip key and bootstrap token"}
	var o secretsOptions
	var out string
	var kube bool
	names := map[string]*string{}
	initCmd := &cobra.Command{
		Use:   "init (--out DIR | --kubernetes --tls-secret NAME --gossip-secret NAME --token-secret NAME)",
		Short: "Make a federation CA, a server and an agent certificate, a gossip key and a bootstrap token",
		Long: `Make what a new federation's servers and agents start from: a federation CA,
one server certificate (DNS names server.atomfed, localhost and every
--server-name, which must include every server's --node; IPs 127.0.0.1, ::1
and every --server-ip), one agent certificate (agent.atomfed, localhost and
every --agent-name), a gossip key and a bootstrap token (FEDERATION_TOKEN).

With --out DIR the files are written there (ca.pem, ca-key.pem, server.pem,
server-key.pem, agent.pem, agent-key.pem, gossip.key, federation-token; keys
mode 0600); an existing file is never overwritten. Keep ca-key.pem offline:
it issues certificates the servers trust, and is needed again only to issue
more (see docs/install-systemd.md).

With --kubernetes the material goes into Secrets of the pod's own namespace,
through the Kubernetes API with the pod's service account (the Helm chart's
one-time job runs this): --tls-secret (keys ca.pem, server.pem,
server-key.pem, agent.pem, agent-key.pem), --gossip-secret (gossip.key) and
--token-secret (token); a Secret whose flag is empty is not made. A Secret
that already exists is kept as it is, so running it again changes nothing.
The CA key is not stored: to add server names later, issue a new server
certificate from your own CA, or make new Secrets and restart every node.
Nothing secret is printed.`,
		Example: `  atomfed secrets init --out /root/atomfed-secrets --server-name s1,s2,s3 --server-ip 10.0.0.1,10.1.0.1,10.2.0.1
  atomfed secrets init --kubernetes --tls-secret atomfed-tls --gossip-secret atomfed-gossip --token-secret atomfed-bootstrap-token \
    --server-name atomfed-server-0,atomfed-server-1,atomfed-server-2,atomfed.atomfed.svc`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.serverNames, o.serverIPs, o.agentNames = splitList(o.serverNames), splitList(o.serverIPs), splitList(o.agentNames)
			if (out == "") == !kube {
				return errors.New("give exactly one of --out DIR (write files) and --kubernetes (make Secrets)")
			}
			s, err := newFederationSecrets(o)
			if err != nil {
				return err
			}
			if out != "" {
				return s.writeDir(cmd.OutOrStdout(), out)
			}
			api, err := inClusterAPI()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Minute)
			defer cancel()
			made := 0
			for _, g := range secretGroups {
				name := *names[g.flag]
				if name == "" {
					continue
				}
				made++
				data := map[string][]byte{}
				for k, f := range g.keys {
					data[k] = s.files[f]
				}
				created, err := api.createSecret(ctx, name, data)
				if err != nil {
					return err
				}
				state := "created"
				if !created {
					state = "exists; kept as it is"
				}
				fmt.Fprintf(cmd.OutOrStdout(), "secret %s/%s: %s\n", api.namespace, name, state)
			}
			if made == 0 {
				return errors.New("--kubernetes needs at least one of --tls-secret, --gossip-secret and --token-secret")
			}
			return nil
		},
	}
	f := initCmd.Flags()
	f.StringVar(&out, "out", "", "write the files into this directory (made 0700 when missing)")
	f.BoolVar(&kube, "kubernetes", false, "make Kubernetes Secrets in the pod's namespace instead of files")
	for _, g := range secretGroups {
		names[g.flag] = new(string)
		f.StringVar(names[g.flag], g.flag, "", "with --kubernetes: name of the Secret to make (keys: "+strings.Join(sortedKeys(g.keys), ", ")+")")
	}
	f.StringSliceVar(&o.serverNames, "server-name", nil, "DNS names of the server certificate besides server.atomfed: every server's --node, and the names clients use (comma-separated)")
	f.StringSliceVar(&o.serverIPs, "server-ip", nil, "IP addresses of the server certificate besides 127.0.0.1 and ::1 (comma-separated)")
	f.StringSliceVar(&o.agentNames, "agent-name", nil, "DNS names of the agent certificate besides agent.atomfed (comma-separated)")
	cmd.AddCommand(initCmd)
	return cmd
}

// writeDir writes every file and the CA key into dir, refusing to replace
// any of them; what it wrote before a failure is removed.
func (s *federationSecrets) writeDir(w io.Writer, dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	files := map[string][]byte{"ca-key.pem": s.caKey}
	for k, v := range s.files {
		files[k] = v
	}
	for name := range files {
		if _, err := os.Lstat(filepath.Join(dir, name)); err == nil {
			return fmt.Errorf("%s already exists: refusing to overwrite a federation's secrets (pick an empty --out)", filepath.Join(dir, name))
		}
	}
	var written []string
	for _, name := range sortedKeys(files) {
		perm := os.FileMode(0o600)
		if strings.HasSuffix(name, ".pem") && !strings.HasSuffix(name, "key.pem") {
			perm = 0o644
		}
		if err := writeNew(filepath.Join(dir, name), files[name], perm); err != nil {
			for _, p := range written {
				os.Remove(p)
			}
			return err
		}
		written = append(written, filepath.Join(dir, name))
	}
	fmt.Fprintf(w, "wrote %s into %s (keep ca-key.pem offline)\n", strings.Join(sortedKeys(files), ", "), dir)
	return nil
}

// kubeAPI is the little of the Kubernetes API that making Secrets needs.
type kubeAPI struct {
	base, token, namespace string
	client                 *http.Client
}

// serviceAccountDir is where Kubernetes mounts a pod's service account
// (a variable for tests).
var serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// inClusterAPI reads the pod's service account and the API's address.
func inClusterAPI() (*kubeAPI, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("--kubernetes runs in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set); outside Kubernetes use --out DIR")
	}
	read := func(name string) (string, error) {
		b, err := os.ReadFile(filepath.Join(serviceAccountDir, name))
		if err != nil {
			return "", fmt.Errorf("the pod's service account (%s): %w; the job needs automountServiceAccountToken", name, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	token, err := read("token")
	if err != nil {
		return nil, err
	}
	ns, err := read("namespace")
	if err != nil {
		return nil, err
	}
	pool, err := tlsutil.Pool(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, err
	}
	return &kubeAPI{
		base: "https://" + net.JoinHostPort(host, port), token: token, namespace: ns,
		client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}},
	}, nil
}

// createSecret makes an Opaque Secret; created is false when one of that
// name exists already (it is left as it is).
func (k *kubeAPI) createSecret(ctx context.Context, name string, data map[string][]byte) (created bool, err error) {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
		"metadata": map[string]any{"name": name, "labels": map[string]string{"app.kubernetes.io/part-of": "atomfed", "app.kubernetes.io/created-by": "atomfed-secrets-init"}},
		"data":     data,
	})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, k.base+"/api/v1/namespaces/"+k.namespace+"/secrets", bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return false, fmt.Errorf("create secret %s: %w", name, err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusConflict:
		return false, nil
	case resp.StatusCode/100 == 2:
		return true, nil
	case resp.StatusCode == http.StatusForbidden:
		return false, fmt.Errorf("create secret %s: 403: the job's service account may not create Secrets in %s (the chart's Role grants create on secrets): %s", name, k.namespace, kubeMessage(msg))
	default:
		return false, fmt.Errorf("create secret %s: %s: %s", name, resp.Status, kubeMessage(msg))
	}
}

// kubeMessage is the message of a Kubernetes Status answer (never the
// request, which holds the secret).
func kubeMessage(b []byte) string {
	var st struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(b, &st) == nil && st.Message != "" {
		return st.Message
	}
	return strings.TrimSpace(string(b))
}
