package testcluster

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// rawClient sends the raw requests of Node.Do. It never follows redirects
// and has no timeout of its own: callers bound requests with a context.
// Its TLS config trusts any certificate: each test cluster has its own CA,
// and what these requests test is the API, not the certificate chain
// (TestTLS checks that).
var rawClient = &http.Client{
	Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Response is a raw HTTP answer of a node.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Index returns the X-Atomfed-Index header as a number, or 0.
func (r *Response) Index() uint64 {
	n, _ := strconv.ParseUint(r.Header.Get("X-Atomfed-Index"), 10, 64)
	return n
}

// ServedBy returns the X-Atomfed-Served-By header.
func (r *Response) ServedBy() string { return r.Header.Get("X-Atomfed-Served-By") }

// JSON decodes the body into v, failing the test when it is not JSON.
func (r *Response) JSON(t testutil.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("response body is not the expected JSON (%v): %s", err, r.Body)
	}
}

// ErrorDetail decodes the error envelope strictly: exactly
// {"error":{"code","message"}}, with both fields set. ok is false when the
// body is anything else.
func (r *Response) ErrorDetail() (d structs.ErrorDetail, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	var eb structs.ErrorBody
	if err := dec.Decode(&eb); err != nil {
		return d, false
	}
	return eb.Error, eb.Error.Code != "" && eb.Error.Message != ""
}

// Do sends a raw request to the node and returns its answer. body may be
// nil, []byte or an io.Reader (sent without a Content-Length); hdr adds
// headers. A transport error fails the test.
func (n *Node) Do(t testutil.TB, method, path string, body any, hdr http.Header) *Response {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := n.DoCtx(ctx, method, path, body, hdr)
	if err != nil {
		t.Fatalf("%s %s %s: %v", n.ID, method, path, err)
	}
	return resp
}

// DoCtx is Do bounded by ctx, returning the transport error instead of
// failing the test (for calls made from other goroutines).
func (n *Node) DoCtx(ctx context.Context, method, path string, body any, hdr http.Header) (*Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	case io.Reader:
		rd = b
	default:
		buf, err := json.Marshal(b)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+Token)
	for k, vs := range hdr {
		req.Header[k] = vs // a test may replace or blank the token
	}
	resp, err := rawClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// InFlight returns how many requests for path this node is serving right
// now (a blocking query counts while it waits).
func (n *Node) InFlight(path string) int { return n.inflight.count(path) }

// Node returns the node with the given id, or nil.
func (c *Cluster) Node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// inflight counts a node's requests in progress by URL path.
type inflight struct {
	mu sync.Mutex
	n  map[string]int
}

func newInflight() *inflight { return &inflight{n: map[string]int{}} }

func (f *inflight) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		f.mu.Lock()
		f.n[p]++
		f.mu.Unlock()
		defer func() {
			f.mu.Lock()
			f.n[p]--
			f.mu.Unlock()
		}()
		next.ServeHTTP(w, r)
	})
}

func (f *inflight) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n[path]
}

// LogBuffer is an io.Writer for Options.LogOutput that a test can search.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines returns the logged lines that contain every one of subs.
func (b *LogBuffer) Lines(subs ...string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for _, line := range strings.Split(b.buf.String(), "\n") {
		match := true
		for _, s := range subs {
			if !strings.Contains(line, s) {
				match = false
				break
			}
		}
		if match && line != "" {
			out = append(out, line)
		}
	}
	return out
}
