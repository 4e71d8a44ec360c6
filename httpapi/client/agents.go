package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/wire"
	"github.com/atomcloud/atomfed/internal/structs"
)

// RegionViews lists the regions with their health and database endpoint.
func (c *Client) RegionViews(ctx context.Context, q *QueryOptions) ([]wire.RegionView, *Meta, error) {
	var out wire.RegionList
	m, err := c.Do(ctx, http.MethodGet, "/v1/regions", q.values(nil), nil, &out)
	return out.Regions, m, err
}

// Agents lists the agent registry, optionally of one region.
func (c *Client) Agents(ctx context.Context, region string, q *QueryOptions) ([]*fsm.Agent, *Meta, error) {
	var out wire.AgentList
	v := url.Values{}
	if region != "" {
		v.Set("region", region)
	}
	m, err := c.Do(ctx, http.MethodGet, "/v1/agents", q.values(v), nil, &out)
	return out.Agents, m, err
}

// Tasks lists tasks, filtered by region, type and agent when not empty.
func (c *Client) Tasks(ctx context.Context, region, typ, agent string, q *QueryOptions) ([]*fsm.Task, *Meta, error) {
	var out wire.TaskList
	v := url.Values{}
	for k, val := range map[string]string{"region": region, "type": typ, "agent": agent} {
		if val != "" {
			v.Set(k, val)
		}
	}
	m, err := c.Do(ctx, http.MethodGet, "/v1/tasks", q.values(v), nil, &out)
	return out.Tasks, m, err
}

// AgentTasks is the blocking query for an agent's assignments.
func (c *Client) AgentTasks(ctx context.Context, node string, index uint64, wait time.Duration) ([]*fsm.Task, uint64, error) {
	var out wire.TaskList
	q := &QueryOptions{Index: index, Wait: wait, Consistency: "default"}
	m, err := c.Do(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(node)+"/tasks", q.values(nil), nil, &out)
	if err != nil {
		return nil, 0, err
	}
	return out.Tasks, m.Index, nil
}

// AgentReport commits an agent heartbeat with task statuses, signed with
// the client's key (the agent's).
func (c *Client) AgentReport(ctx context.Context, r *fsm.AgentReport) (*fsm.ReportResult, error) {
	var out fsm.ReportResult
	payload := map[string]any{"node": r.Node, "tasks": r.Tasks}
	_, err := c.signedDo(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(r.Node)+"/report", nil, payload, nil, &out)
	return &out, err
}

// AgentLeave hands an agent's tasks back, signed with the agent's key.
func (c *Client) AgentLeave(ctx context.Context, node string) error {
	_, err := c.signedDo(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(node)+"/leave", nil, nil, nil, nil)
	return err
}

// Coordinates lists every node's Serf coordinate.
func (c *Client) Coordinates(ctx context.Context) ([]structs.Coordinate, error) {
	var out []structs.Coordinate
	_, err := c.Do(ctx, http.MethodGet, "/v1/coordinates", nil, nil, &out)
	return out, err
}

// NearestRegions ranks regions by estimated RTT from a node or region.
func (c *Client) NearestRegions(ctx context.Context, from string) ([]structs.RegionRTT, error) {
	var out wire.NearestRegions
	_, err := c.Do(ctx, http.MethodGet, "/v1/regions/nearest", url.Values{"from": {from}}, nil, &out)
	return out.Regions, err
}

// Pool spreads an agent's calls over the servers it knows, sticking to one
// that answers and moving to the next when it does not.
type Pool struct {
	servers func() []string
	opts    []Option
	mu      sync.Mutex
	clients map[string]*Client
	current string
}

// NewPool returns a pool over the servers listed by servers (nearest first).
func NewPool(servers func() []string, opts ...Option) *Pool {
	return &Pool{servers: servers, opts: opts, clients: map[string]*Client{}}
}

// ErrNoServers means no server is known yet.
var ErrNoServers = errors.New("no atomfed server known yet")

func (p *Pool) client(addr string) (*Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[addr]; ok {
		return c, nil
	}
	c, err := New(addr, p.opts...)
	if err != nil {
		return nil, err
	}
	if c.tlsCfg != nil && !strings.HasPrefix(c.base, "https://") {
		// A member gossiping a plain URL while the federation runs TLS
		// gets nothing, least of all the pool's token.
		return nil, fmt.Errorf("refused: server %q is not an https:// URL, and the federation runs TLS", addr)
	}
	p.clients[addr] = c
	return c, nil
}

// do runs fn against the current server, then the others in order, until
// one answers. Answers from the server (4xx, 409...) are returned as is;
// only transport failures and 503s move on.
func (p *Pool) do(ctx context.Context, fn func(*Client) error) error {
	servers := p.servers()
	if len(servers) == 0 {
		return ErrNoServers
	}
	p.mu.Lock()
	cur := p.current
	p.mu.Unlock()
	order := make([]string, 0, len(servers))
	for _, s := range servers {
		if s == cur {
			order = append([]string{s}, order...)
		} else {
			order = append(order, s)
		}
	}
	var last error
	for _, addr := range order {
		c, err := p.client(addr)
		if err != nil {
			last = err
			continue
		}
		err = fn(c)
		if err == nil || (StatusOf(err) != 0 && StatusOf(err) != http.StatusServiceUnavailable) {
			p.mu.Lock()
			p.current = addr
			p.mu.Unlock()
			return err
		}
		last = err
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return last
}

// AgentTasks implements the agent's task watch over the pool.
func (p *Pool) AgentTasks(ctx context.Context, node string, index uint64, wait time.Duration) ([]*fsm.Task, uint64, error) {
	var tasks []*fsm.Task
	var idx uint64
	err := p.do(ctx, func(c *Client) error {
		var err error
		tasks, idx, err = c.AgentTasks(ctx, node, index, wait)
		return err
	})
	return tasks, idx, err
}

// AgentReport implements the agent's report over the pool.
func (p *Pool) AgentReport(ctx context.Context, r *fsm.AgentReport) (*fsm.ReportResult, error) {
	var res *fsm.ReportResult
	err := p.do(ctx, func(c *Client) error {
		var err error
		res, err = c.AgentReport(ctx, r)
		return err
	})
	return res, err
}

// AgentRegister registers the agent's key as a trust member, over the pool.
func (p *Pool) AgentRegister(ctx context.Context, node string) error {
	return p.do(ctx, func(c *Client) error {
		_, err := c.RegisterMember(ctx, node, fsm.MemberAgent)
		return err
	})
}

// CheckAgentToken asks a server of the pool what the pool's token is, and
// returns an error wrapping structs.ErrWrongAgentToken unless it is an agent
// token bound to node and region.
func (p *Pool) CheckAgentToken(ctx context.Context, node, region string) error {
	var self *wire.TokenInfo
	err := p.do(ctx, func(c *Client) error {
		var err error
		self, err = c.TokenSelf(ctx)
		return err
	})
	if st := StatusOf(err); st == http.StatusUnauthorized || st == http.StatusForbidden {
		return fmt.Errorf("%w: %v", structs.ErrWrongAgentToken, err)
	}
	if err != nil {
		return err
	}
	switch {
	case self.Role != fsm.RoleAgent:
		return fmt.Errorf("%w: it is a token of role %s (accessor %s); an agent needs its own agent token: atomfed token create --role agent --node %s --region %s",
			structs.ErrWrongAgentToken, self.Role, self.Accessor, node, region)
	case self.Node == "":
		return fmt.Errorf("%w: it is an agent token bound to no node (made before protocol 4, accessor %s); make one with: atomfed token create --role agent --node %s --region %s",
			structs.ErrWrongAgentToken, self.Accessor, node, region)
	case self.Node != node || self.Region != region:
		return fmt.Errorf("%w: it is bound to agent %s in region %s, not to %s in %s", structs.ErrWrongAgentToken, self.Node, self.Region, node, region)
	}
	return nil
}

// KnownMembers returns the names of the members the federation knows by
// identity, as a server of the pool says: the servers of the Raft
// configuration and the agents of region's registry. The metrics task
// scrapes only those (never a member merely gossiping a URL).
func (p *Pool) KnownMembers(ctx context.Context, region string) (map[string]bool, error) {
	known := map[string]bool{}
	err := p.do(ctx, func(c *Client) error {
		peers, err := c.Peers(ctx)
		if err != nil {
			return err
		}
		agents, _, err := c.Agents(ctx, region, &QueryOptions{Consistency: "stale"})
		if err != nil {
			return err
		}
		for _, s := range peers {
			known[s.ID] = true
		}
		for _, a := range agents {
			known[a.Node] = true
		}
		return nil
	})
	return known, err
}

// AgentLeave implements the agent's leave over the pool.
func (p *Pool) AgentLeave(ctx context.Context, node string) error {
	return p.do(ctx, func(c *Client) error { return c.AgentLeave(ctx, node) })
}
