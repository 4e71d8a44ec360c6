package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// clientFlags are the flags every client command takes.
type clientFlags struct {
	addr        string
	token       string
	caCert      string
	keyPath     string
	output      string
	consistency string
	timeout     time.Duration
}

func defaultAddr() string {
	for _, k := range []string{"ATOMFED_ADDR", "GLOBAL_REGISTRY_URL"} {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return "https://127.0.0.1:8401"
}

func (f *clientFlags) register(cmd *cobra.Command) {
	p := cmd.PersistentFlags()
	p.StringVar(&f.addr, "addr", defaultAddr(), "server address (env ATOMFED_ADDR, else GLOBAL_REGISTRY_URL)")
	// No secret as a flag default: --help would print it.
	p.StringVar(&f.token, "token", "", "API token (default $FEDERATION_TOKEN)")
	p.StringVar(&f.caCert, "ca-cert", os.Getenv("ATOMFED_CACERT"), "CA certificate to verify the server with (env ATOMFED_CACERT)")
	p.StringVar(&f.keyPath, "key", os.Getenv("COSIGN_KEY_PATH"), "signing key for signed requests (env COSIGN_KEY_PATH; password from COSIGN_PASSWORD)")
	p.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	p.StringVar(&f.consistency, "consistency", "", "read consistency: linearizable (default), default or stale")
	p.DurationVar(&f.timeout, "timeout", 30*time.Second, "request timeout")
}

func (f *clientFlags) client() (*client.Client, error) {
	if f.output != "table" && f.output != "json" {
		return nil, fmt.Errorf("--output %q must be table or json", f.output)
	}
	if f.token == "" {
		f.token = os.Getenv("FEDERATION_TOKEN")
	}
	opts := []client.Option{client.WithToken(f.token)}
	if f.caCert != "" {
		cfg, err := tlsutil.ClientConfig(tlsutil.Files{CA: f.caCert}, "")
		if err != nil {
			return nil, err
		}
		opts = append(opts, client.WithTLS(cfg))
	}
	if f.keyPath != "" {
		s, err := signing.LoadSigner(f.keyPath, []byte(os.Getenv(signing.PasswordEnv)))
		if err != nil {
			return nil, fmt.Errorf("--key/COSIGN_KEY_PATH: %w", err)
		}
		opts = append(opts, client.WithSigner(s))
	}
	// A CLI call during an election waits for the new leader rather than
	// failing: a no_leader answer means nothing happened.
	opts = append(opts, client.WithRetry(10*time.Second))
	return client.New(f.addr, opts...)
}

// signingClient is client for commands that must sign.
func (f *clientFlags) signingClient() (*client.Client, error) {
	if f.keyPath == "" {
		return nil, fmt.Errorf("this command sends a signed request: give the signing key with --key or COSIGN_KEY_PATH (password in COSIGN_PASSWORD)")
	}
	return f.client()
}

// do runs fn with a client and a context bounded by --timeout.
func (f *clientFlags) do(fn func(ctx context.Context, c *client.Client) error) error {
	return f.with(f.client, fn)
}

// doSigned is do for commands that send a signed request: it needs a key.
func (f *clientFlags) doSigned(fn func(ctx context.Context, c *client.Client) error) error {
	return f.with(f.signingClient, fn)
}

func (f *clientFlags) with(newClient func() (*client.Client, error), fn func(ctx context.Context, c *client.Client) error) error {
	c, err := newClient()
	if err != nil {
		return err
	}
	ctx, cancel := f.ctx()
	defer cancel()
	return fn(ctx, c)
}

func (f *clientFlags) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), f.timeout)
}

func (f *clientFlags) query() *client.QueryOptions {
	return &client.QueryOptions{Consistency: f.consistency}
}

// print writes v as indented JSON, or calls table when the output is a table.
func (f *clientFlags) print(v any, table func(w *tabwriter.Writer)) error {
	if f.output == "json" || table == nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	table(w)
	return w.Flush()
}

// parseLabels turns k=v flags into a map.
func parseLabels(in []string) (map[string]string, error) {
	if len(in) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, kv := range in {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("label %q must be key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

func optCAS(cmd *cobra.Command, cas uint64) *uint64 {
	if cmd.Flags().Changed("cas") {
		return client.CAS(cas)
	}
	return nil
}

func joinOrDash(s []string) string {
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, ",")
}

// markRequired makes cobra refuse the command, naming the flags, before
// any request is sent when one of them is missing.
func markRequired(cmd *cobra.Command, names ...string) {
	for _, n := range names {
		if err := cmd.MarkFlagRequired(n); err != nil {
			panic(err) // a flag name that does not exist: a programming error
		}
	}
}
