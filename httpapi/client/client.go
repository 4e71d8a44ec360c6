// Package client is the Go client of the atomfed HTTP API, used by the CLI,
// the region agents, the benchmarks and the tests.
package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Client talks to one atomfed server.
type Client struct {
	base   string
	token  string
	hc     *http.Client
	signer *signing.Signer
	tlsCfg *tls.Config
	retry  time.Duration
	strict bool
}

// Option configures a Client.
type Option func(*Client)

// WithToken sets the bearer token sent with every request.
func WithToken(t string) Option { return func(c *Client) { c.token = t } }

// WithSigner signs the requests that must be signed (region registration,
// agent reports, approvals, key rotation) with s.
func WithSigner(s *signing.Signer) Option { return func(c *Client) { c.signer = s } }

// WithTLS sets the TLS configuration used for https:// servers (the
// federation CA, and a client certificate for server-to-server calls).
func WithTLS(cfg *tls.Config) Option { return func(c *Client) { c.tlsCfg = cfg } }

// WithRetry retries, for up to d, a request the server answered with 503
// no_leader: nothing was applied or read, so trying again is safe. The
// waits grow from 100 ms to 1 s, or follow Retry-After. Streamed bodies
// (io.Reader) are sent once.
func WithRetry(d time.Duration) Option { return func(c *Client) { c.retry = d } }

// WithStrictDecoding makes the client refuse an answer that has a field
// its types (httpapi/wire, internal/structs, fsm) do not: the tests run
// with it so that the server and the client cannot drift apart unnoticed.
// Without it, unknown fields are ignored, so that an older client can talk
// to a newer server.
func WithStrictDecoding() Option { return func(c *Client) { c.strict = true } }

// WithHTTPClient replaces the underlying HTTP client.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// New returns a client for the server at addr (a URL, or host:port for
// http).
func New(addr string, opts ...Option) (*Client, error) {
	if addr == "" {
		return nil, errors.New("no server address: set --addr or ATOMFED_ADDR")
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("server address %q must be an http(s) URL such as http://127.0.0.1:8401", addr)
	}
	c := &Client{
		base: strings.TrimRight(u.String(), "/"),
		hc: &http.Client{Transport: &http.Transport{
			MaxIdleConns: 256, MaxIdleConnsPerHost: 256, IdleConnTimeout: 90 * time.Second,
		}},
	}
	for _, o := range opts {
		o(c)
	}
	if c.tlsCfg != nil {
		if tr, ok := c.hc.Transport.(*http.Transport); ok {
			tr.TLSClientConfig = c.tlsCfg
		}
	}
	return c, nil
}

// Signer returns the client's signer, or nil.
func (c *Client) Signer() *signing.Signer { return c.signer }

// Addr returns the server's base URL.
func (c *Client) Addr() string { return c.base }

// Error is an error answered by the server.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s (HTTP %d, %s)", e.Message, e.Status, e.Code)
}

// IsCode reports whether err is an *Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// StatusOf returns the HTTP status of an *Error, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// QueryOptions are the read parameters of every GET.
type QueryOptions struct {
	Consistency string        // linearizable (default), default or stale
	Index       uint64        // block until the index passes this
	Wait        time.Duration // how long to block
}

// Meta is what a response says about the state it reflects.
type Meta struct {
	Index       uint64
	KnownLeader bool
	ServedBy    string
	Status      int
}

func (q *QueryOptions) values(v url.Values) url.Values {
	if q == nil {
		return v
	}
	if v == nil {
		v = url.Values{}
	}
	if q.Consistency != "" {
		v.Set("consistency", q.Consistency)
	}
	if q.Index > 0 {
		v.Set("index", strconv.FormatUint(q.Index, 10))
	}
	if q.Wait > 0 {
		v.Set("wait", q.Wait.String())
	}
	return v
}

// Do sends a request with a JSON body (raw []byte is sent as is) and decodes
// a JSON answer into out. Non-2xx answers become *Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body, out any) (*Meta, error) {
	return c.do(ctx, method, path, query, body, out, nil)
}

// DoWithHeader is Do with extra request headers, for a caller that builds
// a signed body itself (X-Atomfed-Signature).
func (c *Client) DoWithHeader(ctx context.Context, method, path string, query url.Values, body, out any, hdr http.Header) (*Meta, error) {
	return c.do(ctx, method, path, query, body, out, hdr)
}

func (c *Client) do(ctx context.Context, method, path string, query url.Values, body, out any, hdr http.Header) (*Meta, error) {
	var raw []byte
	var stream io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		raw = b
	case io.Reader:
		stream = b
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		raw = buf
	}
	deadline := time.Now().Add(c.retry)
	wait := 100 * time.Millisecond
	for {
		rd := stream
		if raw != nil {
			rd = bytes.NewReader(raw)
		}
		meta, after, err := c.once(ctx, method, path, query, rd, out, hdr)
		var e *Error
		if stream != nil || !errors.As(err, &e) || e.Code != "no_leader" || time.Now().Add(wait).After(deadline) {
			return meta, err
		}
		if after > 0 {
			wait = after
		}
		select {
		case <-ctx.Done():
			return meta, err
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// once sends one request. after is the server's Retry-After, if any.
func (c *Client) once(ctx context.Context, method, path string, query url.Values, rd io.Reader, out any, hdr http.Header) (meta *Meta, after time.Duration, err error) {
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, 0, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	meta = &Meta{Status: resp.StatusCode, ServedBy: resp.Header.Get("X-Atomfed-Served-By")}
	meta.Index, _ = strconv.ParseUint(resp.Header.Get("X-Atomfed-Index"), 10, 64)
	meta.KnownLeader = resp.Header.Get("X-Atomfed-Known-Leader") == "true"
	if resp.StatusCode/100 != 2 {
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			after = time.Duration(s) * time.Second
		}
		return meta, after, decodeError(resp)
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return meta, 0, err
	}
	if out == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		return meta, 0, nil
	}
	if err := c.decode(resp.Body, out); err != nil {
		return meta, 0, fmt.Errorf("decode response from %s: %w", path, err)
	}
	return meta, 0, nil
}

// decode decodes one JSON answer into out, refusing unknown fields when
// the client is strict.
func (c *Client) decode(r io.Reader, out any) error {
	dec := json.NewDecoder(r)
	if c.strict {
		dec.DisallowUnknownFields()
	}
	return dec.Decode(out)
}

func decodeError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb structs.ErrorBody
	if err := json.Unmarshal(b, &eb); err != nil || eb.Error.Code == "" {
		msg := strings.TrimSpace(string(b))
		if msg == "" {
			msg = resp.Status
		}
		return &Error{Status: resp.StatusCode, Code: "http_" + strconv.Itoa(resp.StatusCode), Message: msg}
	}
	return &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
}

func casQuery(cas *uint64) url.Values {
	if cas == nil {
		return nil
	}
	return url.Values{"cas": {strconv.FormatUint(*cas, 10)}}
}

// CAS returns a pointer to n, for the cas arguments below.
func CAS(n uint64) *uint64 { return &n }

// RegisterRegion creates or updates a region through the seed path. With
// a signer, the body carries the signer's public key (a first registration
// proves possession of it) and is signed. The answer is the region, or, for
// a gated action (a production region), the pending approval: see
// RegisterRegionGated.
func (c *Client) RegisterRegion(ctx context.Context, r *fsm.Region, cas *uint64) (*fsm.Region, error) {
	reg, _, err := c.RegisterRegionGated(ctx, r, cas)
	if err == nil && reg == nil {
		err = &Error{Status: http.StatusAccepted, Code: "approval_pending", Message: "the registration waits for approvals"}
	}
	return reg, err
}

// RegisterRegionGated registers a region and returns either the region or,
// when the policy gates it, the pending approval.
func (c *Client) RegisterRegionGated(ctx context.Context, r *fsm.Region, cas *uint64) (*fsm.Region, *fsm.Approval, error) {
	extra := map[string]any{}
	if c.signer != nil {
		extra["public_key"] = string(c.signer.PublicPEM)
	}
	var raw json.RawMessage
	m, err := c.signedDo(ctx, http.MethodPost, "/region/register", casQuery(cas), r, extra, &raw)
	if err != nil {
		return nil, nil, err
	}
	if m.Status == http.StatusAccepted {
		var a fsm.Approval
		return nil, &a, c.decode(bytes.NewReader(raw), &a)
	}
	var out fsm.Region
	return &out, nil, c.decode(bytes.NewReader(raw), &out)
}

// Regions lists the regions.
func (c *Client) Regions(ctx context.Context, q *QueryOptions) ([]*fsm.Region, *Meta, error) {
	views, m, err := c.RegionViews(ctx, q)
	if err != nil {
		return nil, m, err
	}
	regions := make([]*fsm.Region, len(views))
	for i := range views {
		regions[i] = &views[i].Region
	}
	return regions, m, nil
}

// Region reads one region (RegionView also has its health and database).
func (c *Client) Region(ctx context.Context, name string, q *QueryOptions) (*fsm.Region, *Meta, error) {
	v, m, err := c.RegionView(ctx, name, q)
	return &v.Region, m, err
}

// RegionView reads one region with its health and database endpoint.
func (c *Client) RegionView(ctx context.Context, name string, q *QueryOptions) (*wire.RegionView, *Meta, error) {
	var out wire.RegionView
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions/"+url.PathEscape(name), q.values(nil), nil, &out)
	return &out, m, err
}

// DeleteRegion deregisters a region.
func (c *Client) DeleteRegion(ctx context.Context, name string, cas *uint64) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/regions/"+url.PathEscape(name), casQuery(cas), nil, nil)
	return err
}

// PutTenant creates or replaces a tenant.
func (c *Client) PutTenant(ctx context.Context, t *fsm.Tenant, cas *uint64) (*fsm.Tenant, error) {
	var out fsm.Tenant
	_, err := c.Do(ctx, http.MethodPut, "/v1/tenants/"+url.PathEscape(t.ID), casQuery(cas), t, &out)
	return &out, err
}

// PatchTenant changes the fields of a tenant that patch names (a JSON merge
// patch: a named field replaces the current value, nil removes it) and
// keeps the rest.
func (c *Client) PatchTenant(ctx context.Context, id string, patch map[string]any, cas *uint64) (*fsm.Tenant, error) {
	var out fsm.Tenant
	_, err := c.Do(ctx, http.MethodPatch, "/v1/tenants/"+url.PathEscape(id), casQuery(cas), patch, &out)
	return &out, err
}

// Tenant reads one tenant.
func (c *Client) Tenant(ctx context.Context, id string, q *QueryOptions) (*fsm.Tenant, *Meta, error) {
	var out fsm.Tenant
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants/"+url.PathEscape(id), q.values(nil), nil, &out)
	return &out, m, err
}

// Tenants lists tenants, optionally those placed in one region.
func (c *Client) Tenants(ctx context.Context, region string, q *QueryOptions) ([]*fsm.Tenant, *Meta, error) {
	var out wire.TenantList
	v := url.Values{}
	if region != "" {
		v.Set("region", region)
	}
	m, err := c.Do(ctx, http.MethodGet, "/v1/tenants", q.values(v), nil, &out)
	return out.Tenants, m, err
}

// DeleteTenant deletes a tenant.
func (c *Client) DeleteTenant(ctx context.Context, id string, cas *uint64) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/tenants/"+url.PathEscape(id), casQuery(cas), nil, nil)
	return err
}

// Health reads /health of this server.
func (c *Client) Health(ctx context.Context) (*structs.Health, error) {
	var out structs.Health
	_, err := c.Do(ctx, http.MethodGet, "/health", nil, nil, &out)
	return &out, err
}

// Leader reads the current leader.
func (c *Client) Leader(ctx context.Context) (*structs.LeaderInfo, error) {
	var out structs.LeaderInfo
	_, err := c.Do(ctx, http.MethodGet, "/v1/status/leader", nil, nil, &out)
	return &out, err
}

// Peers reads the raft peers as this server knows them.
func (c *Client) Peers(ctx context.Context) ([]structs.Peer, error) {
	var out []structs.Peer
	_, err := c.Do(ctx, http.MethodGet, "/v1/status/peers", nil, nil, &out)
	return out, err
}

// Audit reads the audit chain head and recent entries.
func (c *Client) Audit(ctx context.Context, q *QueryOptions) (*wire.AuditStatus, error) {
	var out wire.AuditStatus
	_, err := c.Do(ctx, http.MethodGet, "/v1/status/audit", q.values(nil), nil, &out)
	return &out, err
}

// Members lists the Serf members this server sees.
func (c *Client) Members(ctx context.Context) ([]structs.Member, error) {
	var out []structs.Member
	_, err := c.Do(ctx, http.MethodGet, "/v1/members", nil, nil, &out)
	return out, err
}

// RaftConfiguration reads the raft configuration from the leader.
func (c *Client) RaftConfiguration(ctx context.Context, q *QueryOptions) ([]structs.Peer, error) {
	var out wire.RaftConfiguration
	_, err := c.Do(ctx, http.MethodGet, "/v1/operator/raft/configuration", q.values(nil), nil, &out)
	return out.Servers, err
}

// RemovePeer removes a server from the raft configuration.
func (c *Client) RemovePeer(ctx context.Context, id string) error {
	_, err := c.Do(ctx, http.MethodDelete, "/v1/operator/raft/peer", url.Values{"id": {id}}, nil, nil)
	return err
}

// SnapshotSave writes a snapshot archive to w.
func (c *Client) SnapshotSave(ctx context.Context, w io.Writer) (*Meta, error) {
	return c.Do(ctx, http.MethodGet, "/v1/snapshot", nil, nil, w)
}

// SnapshotRestore uploads an archive and restores it.
//
// Once the federation has its approvers, a snapshot is restored only
// after they approved its digest: the first upload answers with the
// pending approval (a *PendingError), the same upload after the approval
// restores it.
func (c *Client) SnapshotRestore(ctx context.Context, r io.Reader) (*structs.ArchiveMeta, error) {
	out, a, err := c.SnapshotRestoreGated(ctx, r)
	return out, pendingErr(a, err)
}

// SnapshotRestoreGated is SnapshotRestore that returns a pending approval
// as such.
func (c *Client) SnapshotRestoreGated(ctx context.Context, r io.Reader) (*structs.ArchiveMeta, *fsm.Approval, error) {
	var raw json.RawMessage
	m, err := c.Do(ctx, http.MethodPut, "/v1/snapshot", nil, r, &raw)
	return gated[structs.ArchiveMeta](c, m, raw, err)
}
