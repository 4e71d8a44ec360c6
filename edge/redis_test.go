package edge

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/httpapi/wire"
	tu "github.com/atomcloud/atomfed/internal/testing/testutil"
)

// startRedisOn runs a private redis-server (from the distribution's
// package) on a loopback port, without persistence; stop kills it.
func startRedisOn(t *testing.T, port int) (addr string, stop func()) {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("this test needs redis-server (apt-get install redis-server): %v", err)
	}
	dir := t.TempDir()
	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir,
		"--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	t.Cleanup(stop)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	tu.Eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
	return addr, stop
}

// resp is a RESP connection of the test: it sends commands and reads any
// reply (arrays included, as a subscriber receives them).
type resp struct {
	c  net.Conn
	rd *bufio.Reader
}

func dialRESP(t *testing.T, addr string) *resp {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &resp{c: c, rd: bufio.NewReader(c)}
}

func (r *resp) send(args ...string) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_, _ = r.c.Write([]byte(b.String()))
}

func (r *resp) read(t *testing.T, timeout time.Duration) any {
	t.Helper()
	_ = r.c.SetReadDeadline(time.Now().Add(timeout))
	line, err := r.rd.ReadString('\n')
	if err != nil {
		t.Fatalf("read a reply from redis: %v", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	switch line[0] {
	case '+', ':':
		return line[1:]
	case '-':
		t.Fatalf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return nil
		}
		buf := make([]byte, n+2)
		if _, err := ioReadFull(r.rd, buf); err != nil {
			t.Fatal(err)
		}
		return string(buf[:n])
	case '*':
		n, _ := strconv.Atoi(line[1:])
		out := make([]any, n)
		for i := range out {
			out[i] = r.read(t, timeout)
		}
		return out
	}
	t.Fatalf("unexpected reply %q", line)
	return nil
}

func ioReadFull(rd *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := rd.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// TestRedisPublishesTheRoutingTable: with a Redis publisher, every route
// the edge learns or sees change is written to the atomfed:routes hash
// (field tenant:op) and published on the atomfed:routes channel, against
// a real redis-server; routes learnt while Redis is down are written once
// it is back.
func TestRedisPublishesTheRoutingTable(t *testing.T) {
	addr, stop := startRedisOn(t, tu.FreePort(t))
	sub := dialRESP(t, addr)
	sub.send("SUBSCRIBE", RedisKey)
	if got := sub.read(t, 5*time.Second); fmt.Sprint(got) != "[subscribe "+RedisKey+" 1]" {
		t.Fatalf("subscribe: %v", got)
	}
	pub, err := NewRedisPublisher("redis://"+addr+"/0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()

	eu, us := newApp(t, "eu-west"), newApp(t, "us-east")
	src := newFakeSource()
	src.set("acme", opRead, route("eu-west", eu.URL, alt("us-east", us.URL, true)))
	h := newHarness(t, src, Config{OnChange: pub.Publish})
	h.do(http.MethodGet, "acme", "/")

	published := func(wantRegion string) {
		t.Helper()
		msg, ok := sub.read(t, 10*time.Second).([]any)
		if !ok || len(msg) != 3 || msg[0] != "message" || msg[1] != RedisKey {
			t.Fatalf("published: %v", msg)
		}
		var r wire.Route
		if err := json.Unmarshal([]byte(msg[2].(string)), &r); err != nil || r.Tenant != "acme" || r.Op != opRead || r.Region != wantRegion {
			t.Fatalf("published route %s (%v), want acme read -> %s", msg[2], err, wantRegion)
		}
		q := dialRESP(t, addr)
		q.send("HGET", RedisKey, "acme:read")
		if err := json.Unmarshal([]byte(fmt.Sprint(q.read(t, 5*time.Second))), &r); err != nil || r.Region != wantRegion || r.AppURL == "" {
			t.Fatalf("HGET %s acme:read: %+v (%v), want region %s", RedisKey, r, err, wantRegion)
		}
	}
	published("eu-west")
	src.set("acme", opRead, route("us-east", us.URL, alt("eu-west", eu.URL, false)))
	published("us-east")

	// Redis goes away; a change made meanwhile is written once it is back.
	port, _ := strconv.Atoi(addr[strings.LastIndexByte(addr, ':')+1:])
	pub2, err := NewRedisPublisher("redis://"+addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub2.Close()
	h2 := newHarness(t, src, Config{OnChange: pub2.Publish})
	stop()
	src.set("acme", opWrite, route("us-east", us.URL))
	h2.do(http.MethodPost, "acme", "/")
	startRedisOn(t, port)
	tu.Eventually(t, 15*time.Second, func() error {
		q := dialRESP(t, addr)
		q.send("HGET", RedisKey, "acme:write")
		var r wire.Route
		if v := q.read(t, 5*time.Second); v == nil || json.Unmarshal([]byte(fmt.Sprint(v)), &r) != nil || r.Region != "us-east" {
			return fmt.Errorf("acme:write in Redis after its restart: %v", v)
		}
		return nil
	})
}

// TestRedisURL: a bad REDIS_URL is refused with what to write.
func TestRedisURL(t *testing.T) {
	for _, u := range []string{"http://h:6379", "redis://", "redis://h:6379/x"} {
		if p, err := NewRedisPublisher(u, nil); err == nil {
			p.Close()
			t.Errorf("REDIS_URL %q accepted", u)
		}
	}
}
