package edge

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
)

// HeaderRegion names, on every proxied answer, the region that served it.
const HeaderRegion = "X-Atomfed-Region"

// hopHeaders are dropped between the client and the region (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// ServeHTTP proxies one request to its tenant's region.
func (e *Edge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	tenant := e.tenantOf(r)
	if tenant == "" || !fsm.ValidTenantID(tenant) {
		e.fail(w, "", http.StatusBadRequest, "no_tenant", "the request names no valid tenant: send it in the "+e.cfg.TenantHeader+" header"+hostHint(e.cfg.TenantFromHost))
		return
	}
	op := opWrite
	if idempotent(r) {
		op = opRead
	}
	rt, err := e.route(r.Context(), tenant, op)
	var ce *client.Error
	switch {
	case errors.As(err, &ce) && ce.Status == http.StatusNotFound:
		e.fail(w, op, http.StatusNotFound, "tenant_not_found", "tenant "+strconv.Quote(tenant)+" does not exist")
		return
	case errors.As(err, &ce) && ce.Code == codeSwitchoverInProgress:
		e.fail(w, op, http.StatusServiceUnavailable, codeSwitchoverInProgress, ce.Message)
		return
	case err != nil:
		e.fail(w, op, http.StatusServiceUnavailable, "no_route", "no route for tenant "+strconv.Quote(tenant)+" yet: "+err.Error())
		return
	}
	tgs := targets(rt)
	for i, tg := range tgs {
		last := i == len(tgs)-1
		if tg.AppURL == "" {
			if last {
				e.fail(w, op, http.StatusBadGateway, "no_app_url", "region "+tg.Region+" has no app_url registered")
				return
			}
			continue
		}
		resp, err := e.send(r, tg)
		if err == nil && (op == opWrite || last || !retryableStatus(resp.StatusCode)) {
			e.copy(w, resp, op, tg.Region)
			return
		}
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		} else {
			e.metrics.upstreamErrors.WithLabelValues(op, tg.Region).Inc()
			e.log.Debug("region unreachable", "tenant", tenant, "op", op, "region", tg.Region, "error", err)
		}
		switch {
		case op == opWrite:
			// Sent: it may have been applied. Never retried elsewhere.
			e.fail(w, op, http.StatusBadGateway, "upstream_outcome_unknown", "the write was sent to region "+tg.Region+
				" and its answer was lost; it may have been applied: check before you retry")
			return
		case last:
			e.fail(w, op, http.StatusBadGateway, "upstream_unreachable", "no region of tenant "+strconv.Quote(tenant)+" answered the read")
			return
		}
		e.metrics.retries.WithLabelValues(op).Inc()
	}
}

// idempotent reports whether r may be sent again to another region: a
// read method without a body.
func idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	}
	return false
}

func retryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// send sends r to the target's application.
func (e *Edge) send(r *http.Request, tg target) (*http.Response, error) {
	base, err := url.Parse(tg.AppURL)
	if err != nil {
		return nil, err
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	u := *r.URL
	u.Scheme, u.Host = base.Scheme, base.Host
	u.Path = strings.TrimSuffix(base.Path, "/") + r.URL.Path
	u.RawPath = ""
	out.URL = &u
	out.Host = base.Host
	for _, h := range hopHeaders {
		out.Header.Del(h)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	out.Header.Set("X-Forwarded-Host", r.Host)
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	out.Header.Set("X-Forwarded-Proto", proto)
	return e.cfg.Transport.RoundTrip(out)
}

func (e *Edge) copy(w http.ResponseWriter, resp *http.Response, op, region string) {
	defer resp.Body.Close()
	for _, h := range hopHeaders {
		resp.Header.Del(h)
	}
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.Header().Set(HeaderRegion, region)
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
	e.metrics.requests.WithLabelValues(op, region, strconv.Itoa(resp.StatusCode)).Inc()
}

// fail answers an error of the edge itself in atomfed's error envelope.
func (e *Edge) fail(w http.ResponseWriter, op string, status int, code, msg string) {
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "1")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	e.metrics.requests.WithLabelValues(orNone(op), "", strconv.Itoa(status)).Inc()
}

func orNone(op string) string {
	if op == "" {
		return "none"
	}
	return op
}

func hostHint(fromHost bool) string {
	if fromHost {
		return ", or as the first label of the host name (acme.app.example.com)"
	}
	return ""
}
