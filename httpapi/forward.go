package httpapi

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/atomcloud/atomfed/internal/structs"
)

// hopHeaders are not copied across the forwarding hop (RFC 9110 7.6.1).
var hopHeaders = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true, "Proxy-Authorization": true,
	"Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// forward sends the request to the leader in one hop and relays its answer.
// A request that already carries the forwarding header is never forwarded
// again: the sender thought we were leader, and we are not, so the caller
// gets a retryable 503 instead of a loop. isWrite says whether a failure
// after the request left may have applied it.
func (a *API) forward(w http.ResponseWriter, r *http.Request, body []byte, isWrite bool) {
	if by := r.Header.Get(HeaderForwarded); by != "" {
		a.metrics.forwarded.WithLabelValues("loop_refused").Inc()
		writeError(w, fmt.Errorf("%w: %s forwarded this request here, but this server is not the leader", structs.ErrNoLeader, by))
		return
	}
	url, self, err := a.waitLeader(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	if self {
		// We became leader while waiting: serve it here, marked so that a
		// second flip of leadership cannot loop.
		r2 := r.Clone(r.Context())
		if body != nil {
			r2.Body, r2.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		}
		r2.Header.Set(HeaderForwarded, a.c.NodeID())
		a.router.ServeHTTP(w, r2)
		return
	}
	if body == nil && r.Body != nil && r.Method != http.MethodGet && r.Method != http.MethodHead {
		if body, err = io.ReadAll(r.Body); err != nil {
			writeError(w, badRequest("bad_body", "could not read the request body"))
			return
		}
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, url+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		writeError(w, err)
		return
	}
	for k, vs := range r.Header {
		if !hopHeaders[k] {
			req.Header[k] = vs
		}
	}
	req.Header.Set(HeaderForwarded, a.c.NodeID())
	req.ContentLength = int64(len(body))
	resp, err := a.fwd.Do(req)
	if err != nil {
		a.metrics.forwarded.WithLabelValues("error").Inc()
		var op *net.OpError
		if !isWrite || (errors.As(err, &op) && op.Op == "dial") {
			writeError(w, fmt.Errorf("%w: leader at %s unreachable: %v", structs.ErrNoLeader, url, err))
			return
		}
		writeError(w, fmt.Errorf("%w: forwarding to the leader at %s failed: %v", structs.ErrOutcomeUnknown, url, err))
		return
	}
	defer resp.Body.Close()
	a.metrics.forwarded.WithLabelValues("ok").Inc()
	for k, vs := range resp.Header {
		if !hopHeaders[k] {
			w.Header()[k] = vs
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}
