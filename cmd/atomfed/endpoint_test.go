package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// TestHTTPServerLimits serves on a real socket with shortened limits: a
// client trickling its headers is dropped at the header timeout, headers
// over the limit are refused, an answer that takes longer than the write
// timeout is cut unless its handler moves its deadline (as blocking
// queries do), and an idle keep-alive connection is closed.
func TestHTTPServerLimits(t *testing.T) {
	saved := httpLimits
	t.Cleanup(func() { httpLimits = saved })
	httpLimits.ReadHeader, httpLimits.Read, httpLimits.Write, httpLimits.Idle = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond, 500*time.Millisecond
	httpLimits.MaxHeaderBytes = 4 << 10

	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("extend") != "" {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(5 * time.Second))
		}
		time.Sleep(time.Second)
		fmt.Fprint(w, "answered")
	})
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := serveHTTP(ln, mux, hclog.NewNullLogger())
	t.Cleanup(func() { _ = e.stop() })
	addr := ln.Addr().String()

	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		_, _ = io.WriteString(conn, "GET /fast HTTP/1.1\r\nHost: x\r\n")
		closed := make(chan struct{})
		go func() { _, _ = io.Copy(io.Discard, conn); close(closed) }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-closed:
				if d := time.Since(start); d > 2*time.Second {
					t.Fatalf("dropped after %s, want about %s", d, httpLimits.ReadHeader)
				}
				return
			case <-tick.C:
				if time.Since(start) > 5*time.Second {
					t.Fatal("a client trickling its headers is still connected after 5 s")
				}
				_, _ = conn.Write([]byte("X"))
			}
		}
	})

	t.Run("headers over the limit", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/fast", nil)
		req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("16 KiB of headers: %d, want 431", resp.StatusCode)
		}
	})

	t.Run("write deadline", func(t *testing.T) {
		get := func(path string) (string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
			tr := &http.Transport{DisableKeepAlives: true}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Do(req)
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		if b, err := get("/slow?extend=1"); err != nil || b != "answered" {
			t.Fatalf("an answer whose handler moved its write deadline: %q %v", b, err)
		}
		if b, err := get("/slow"); err == nil && b == "answered" {
			t.Fatal("an answer later than the write timeout was delivered")
		}
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = io.WriteString(conn, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := br.ReadByte(); err == nil || time.Since(start) > 3*time.Second {
			t.Fatalf("idle connection: %v after %s, want closed after about %s", err, time.Since(start), httpLimits.Idle)
		}
	})
}
