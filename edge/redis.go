package edge

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/atomcloud/atomfed/httpapi/wire"
)

// RedisKey is the hash that holds the routing table in Redis (field
// "<tenant>:<op>", value the route as GET /v1/route answers it), and the
// channel every change is published on (the route's JSON).
const RedisKey = "atomfed:routes"

// RedisPublisher writes every route the edge learns to Redis, for edge
// tiers that read Redis (OpenResty, Envoy filters). It speaks RESP over one
// connection; a route that cannot be written is kept and written again
// (the latest of each tenant and operation) once Redis answers.
type RedisPublisher struct {
	addr, password string
	db             int
	log            hclog.Logger

	mu      sync.Mutex
	pending map[string][]byte // field -> route JSON
	kick    chan struct{}
	done    chan struct{}
	stopped chan struct{}

	conn net.Conn
	rd   *bufio.Reader
}

// NewRedisPublisher parses a redis://[:password@]host:port[/db] URL and
// starts the publisher; Close stops it.
func NewRedisPublisher(rawURL string, log hclog.Logger) (*RedisPublisher, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "redis") || u.Host == "" {
		return nil, fmt.Errorf("REDIS_URL must be redis://[:password@]host:port[/db]")
	}
	p := &RedisPublisher{addr: u.Host, pending: map[string][]byte{}, kick: make(chan struct{}, 1), done: make(chan struct{}), stopped: make(chan struct{})}
	if !strings.Contains(u.Host, ":") {
		p.addr = u.Host + ":6379"
	}
	if pw, ok := u.User.Password(); ok {
		p.password = pw
	}
	if db := strings.TrimPrefix(u.Path, "/"); db != "" {
		if p.db, err = strconv.Atoi(db); err != nil || p.db < 0 {
			return nil, fmt.Errorf("REDIS_URL: database %q must be a number", db)
		}
	}
	if log == nil {
		log = hclog.NewNullLogger()
	}
	p.log = log.Named("redis")
	go p.loop()
	return p, nil
}

// Publish queues r to be written; it never blocks on Redis.
func (p *RedisPublisher) Publish(r *wire.Route) {
	b, _ := json.Marshal(r)
	p.mu.Lock()
	p.pending[r.Tenant+":"+r.Op] = b
	p.mu.Unlock()
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close stops the publisher.
func (p *RedisPublisher) Close() {
	close(p.done)
	<-p.stopped
}

func (p *RedisPublisher) loop() {
	defer close(p.stopped)
	defer func() {
		if p.conn != nil {
			p.conn.Close()
		}
	}()
	retry := (<-chan time.Time)(nil)
	for {
		select {
		case <-p.done:
			return
		case <-p.kick:
		case <-retry:
		}
		retry = nil
		if err := p.flush(); err != nil {
			p.log.Warn("cannot write routes to Redis; retrying", "addr", p.addr, "error", err)
			if p.conn != nil {
				p.conn.Close()
				p.conn = nil
			}
			retry = time.After(time.Second)
		}
	}
}

// flush writes every pending route; one that fails stays pending.
func (p *RedisPublisher) flush() error {
	p.mu.Lock()
	batch := p.pending
	p.pending = map[string][]byte{}
	p.mu.Unlock()
	for field, b := range batch {
		err := p.do("HSET", RedisKey, field, string(b))
		if err == nil {
			err = p.do("PUBLISH", RedisKey, string(b))
		}
		if err != nil {
			p.mu.Lock()
			for f, v := range batch {
				if _, newer := p.pending[f]; !newer {
					p.pending[f] = v
				}
			}
			p.mu.Unlock()
			return err
		}
		delete(batch, field)
	}
	return nil
}

// do sends one command and reads its reply, connecting first if needed.
func (p *RedisPublisher) do(args ...string) error {
	if p.conn == nil {
		c, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
		if err != nil {
			return err
		}
		p.conn, p.rd = c, bufio.NewReader(c)
		if p.password != "" {
			if err := p.roundTrip("AUTH", p.password); err != nil {
				return fmt.Errorf("AUTH: %w", err)
			}
		}
		if p.db != 0 {
			if err := p.roundTrip("SELECT", strconv.Itoa(p.db)); err != nil {
				return fmt.Errorf("SELECT: %w", err)
			}
		}
	}
	return p.roundTrip(args...)
}

func (p *RedisPublisher) roundTrip(args ...string) error {
	_ = p.conn.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(p.conn, b.String()); err != nil {
		return err
	}
	return readReply(p.rd)
}

// readReply reads one RESP reply and returns its error, if it is one.
func readReply(rd *bufio.Reader) error {
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return errors.New("empty reply")
	}
	switch line[0] {
	case '+', ':':
		return nil
	case '-':
		return errors.New(line[1:])
	case '$':
		n, err := strconv.Atoi(line[1:])
		if err != nil {
			return fmt.Errorf("bad bulk reply %q", line)
		}
		if n >= 0 {
			_, err = io.CopyN(io.Discard, rd, int64(n)+2)
		}
		return err
	}
	return fmt.Errorf("unexpected reply %q", line)
}
