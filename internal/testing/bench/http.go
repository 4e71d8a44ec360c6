package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// HTTP is the load generator's HTTP client: one pooled transport with
// enough keep-alive connections per host for every client, and response
// bodies drained so that each connection is reused rather than re-dialled.
// It is not specific to atomfed.
type HTTP struct {
	c *http.Client
	// Header is added to every request (e.g. Authorization).
	Header http.Header
}

// NewHTTP returns a client that keeps up to conns idle connections per
// host.
func NewHTTP(conns int) *HTTP {
	if conns < 2 {
		conns = 2
	}
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        4 * conns,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return &HTTP{c: &http.Client{Transport: tr}, Header: http.Header{}}
}

// Secure makes the client trust cfg's CA (https URLs) and send token as a
// bearer token; it returns h.
func (h *HTTP) Secure(cfg *tls.Config, token string) *HTTP {
	if tr, ok := h.c.Transport.(*http.Transport); ok && cfg != nil {
		tr.TLSClientConfig = cfg
	}
	if token != "" {
		h.Header.Set("Authorization", "Bearer "+token)
	}
	return h
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Method, URL string
	Status      int
	Body        string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.Method, e.URL, e.Status, e.Body)
}

// Do sends one request with body (nil for none) and returns nil for a 2xx
// answer. The answer's body is read to the end and discarded.
func (h *HTTP) Do(ctx context.Context, method, url string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return err
	}
	for k, vs := range h.Header {
		req.Header[k] = vs
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	_, _ = io.Copy(io.Discard, resp.Body)
	return &StatusError{Method: method, URL: url, Status: resp.StatusCode, Body: string(bytes.TrimSpace(b))}
}

// CloseIdle closes idle connections (between steps, so that one step's
// connections do not serve the next).
func (h *HTTP) CloseIdle() { h.c.CloseIdleConnections() }

// Get sends req with the client's headers and returns the whole body of a
// 200 answer.
func (h *HTTP) Get(req *http.Request) ([]byte, error) {
	for k, vs := range h.Header {
		req.Header[k] = vs
	}
	resp, err := h.c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &StatusError{Method: req.Method, URL: req.URL.String(), Status: resp.StatusCode, Body: string(b)}
	}
	return b, nil
}
