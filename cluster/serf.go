package cluster

import (
	"context"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/hashicorp/raft"
	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/structs"
)

// memberEvent is a Serf member change handed to the leader's reconciler.
type memberEvent struct {
	serf.Member
	reaped bool
}

// serverMember is what a Serf member says about an atomfed server.
type serverMember struct {
	ID       string
	Region   string
	RaftAddr string
	HTTP     string
	Expect   int
	NonVoter bool
	Status   serf.MemberStatus
	Boot     bool
	Protocol int // 1 when the tag is missing
}

// parseServer reads the server tags of m; ok is false for non-servers.
func parseServer(m serf.Member) (serverMember, bool) {
	if m.Tags[node.TagRole] != node.RoleServer {
		return serverMember{}, false
	}
	expect, _ := strconv.Atoi(m.Tags[node.TagExpect])
	proto, err := strconv.Atoi(m.Tags[node.TagProtocolVersion])
	if err != nil || proto < 1 {
		proto = 1
	}
	return serverMember{
		Protocol: proto,
		ID:       m.Name,
		Region:   m.Tags[node.TagRegion],
		RaftAddr: m.Tags[node.TagRaftAddr],
		HTTP:     m.Tags[node.TagHTTP],
		Expect:   expect,
		NonVoter: m.Tags[node.TagNonVoter] == "1",
		Status:   m.Status,
		Boot:     m.Tags[node.TagBootstrapped] == "1",
	}, true
}

func (s *Server) tags() map[string]string {
	t := map[string]string{
		node.TagRole:            node.RoleServer,
		node.TagRegion:          s.cfg.Region,
		node.TagRaftAddr:        s.stream.Addr().String(),
		node.TagHTTP:            s.cfg.HTTPAdvertiseURL,
		node.TagExpect:          strconv.Itoa(s.cfg.BootstrapExpect),
		node.TagProtocolVersion: strconv.Itoa(s.protocol()),
	}
	if s.cfg.NonVoter {
		t[node.TagNonVoter] = "1"
	}
	if s.cfg.Signer != nil {
		t[node.TagPublicKey] = publicKeyTag(s.cfg.Signer.PublicPEM)
	}
	if s.bootstrapped.Load() {
		t[node.TagBootstrapped] = "1"
	}
	return t
}

// setupSerf creates the Serf member with this server's tags.
func (s *Server) setupSerf() error {
	sf, err := node.StartSerf(node.SerfOptions{
		Name: s.cfg.NodeID, DataDir: s.cfg.DataDir,
		Bind: s.cfg.SerfBindAddr, Advertise: s.cfg.SerfAdvertiseAddr,
		GossipKey: s.cfg.GossipKey, Memberlist: s.cfg.Memberlist,
		Tags: s.tags(), EventCh: s.serfEventCh, Logger: s.logger,
	})
	if err != nil {
		return err
	}
	s.serf = sf
	return nil
}

// SerfAddr returns the address Serf gossips on.
func (s *Server) SerfAddr() string {
	m := s.serf.LocalMember()
	return net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port)))
}

// Serf exposes the Serf member for status endpoints.
func (s *Server) Serf() *serf.Serf { return s.serf }

// retryJoin joins the configured Serf addresses, retrying with backoff until
// at least one answers.
func (s *Server) retryJoin(ctx context.Context) {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		n, err := s.serf.Join(s.cfg.Join, true)
		if n > 0 {
			s.logger.Info("joined the cluster", "contacted", n)
			return
		}
		if attempt == 1 || attempt%10 == 0 {
			s.logger.Warn("join failed; retrying", "addresses", s.cfg.Join, "attempt", attempt, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}

// serfEventLoop is the single consumer of Serf events. It keeps the
// id -> HTTP map current, bootstraps when enough servers are visible, and
// hands membership changes to the leader without blocking.
func (s *Server) serfEventLoop(ctx context.Context) {
	s.refreshServerMap()
	s.maybeBootstrap()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-s.serfEventCh:
			me, ok := ev.(serf.MemberEvent)
			if !ok {
				continue
			}
			s.refreshServerMap()
			reaped := me.EventType() == serf.EventMemberReap
			for _, m := range me.Members {
				s.logger.Debug("member event", "event", me.EventType().String(), "member", m.Name, "status", m.Status.String())
				if s.readyForReads.Load() {
					select {
					case s.reconcileCh <- memberEvent{Member: m, reaped: reaped}:
					default: // the periodic full reconcile catches up
					}
				}
			}
			s.maybeBootstrap()
		case <-tick.C:
			s.maybeBootstrap()
		}
	}
}

// refreshServerMap rebuilds the server id -> HTTP URL map used for
// forwarding.
func (s *Server) refreshServerMap() {
	m := map[string]string{}
	for _, mem := range s.serf.Members() {
		if sm, ok := parseServer(mem); ok && sm.HTTP != "" {
			m[sm.ID] = sm.HTTP
		}
	}
	s.leaderHTTP.Store(&m)
}

// ServerHTTP returns the HTTP base URL gossiped by server id.
func (s *Server) ServerHTTP(id string) (string, bool) {
	u, ok := (*s.leaderHTTP.Load())[id]
	return u, ok
}

// maybeBootstrap forms a new cluster once BootstrapExpect servers with the
// same expectation are alive and none of them already belongs to a cluster.
// Every server computes the same configuration, so all of them bootstrapping
// concurrently is safe.
func (s *Server) maybeBootstrap() {
	if s.cfg.BootstrapExpect == 0 || s.bootstrapped.Load() {
		return
	}
	var servers []raft.Server
	for _, mem := range s.serf.Members() {
		sm, ok := parseServer(mem)
		if !ok || sm.Status != serf.StatusAlive || sm.NonVoter {
			continue
		}
		// Only a member proving a server identity counts: a rogue tagged
		// role=server could otherwise join the first configuration, or
		// stop the bootstrap with a bootstrapped or expect tag.
		// A peer whose Raft port is not up yet fails too: it is tried
		// again on the next tick, and the leader records real refusals.
		if sm.ID != s.cfg.NodeID {
			if err := s.verifyServer(sm); err != nil {
				s.logger.Debug("not counting a server for bootstrap: no server identity yet", "member", sm.ID, "error", err)
				continue
			}
		}
		if sm.Boot {
			// Someone already has a cluster; it will add us.
			s.markBootstrapped()
			return
		}
		if sm.Expect != s.cfg.BootstrapExpect {
			s.logger.Error("peer has a different bootstrap-expect; not bootstrapping", "peer", sm.ID, "theirs", sm.Expect, "ours", s.cfg.BootstrapExpect)
			return
		}
		servers = append(servers, raft.Server{ID: raft.ServerID(sm.ID), Address: raft.ServerAddress(sm.RaftAddr), Suffrage: raft.Voter})
	}
	if len(servers) < s.cfg.BootstrapExpect {
		return
	}
	if err := s.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil && err != raft.ErrCantBootstrap {
		s.logger.Error("bootstrap failed", "error", err)
		return
	}
	s.logger.Info("bootstrapped a new cluster", "servers", len(servers))
	s.markBootstrapped()
}

// markBootstrapped records (and gossips) that this server belongs to a
// cluster, so servers started later never bootstrap a second one.
func (s *Server) markBootstrapped() {
	if s.bootstrapped.Swap(true) {
		return
	}
	if err := s.serf.SetTags(s.tags()); err != nil {
		s.logger.Warn("could not update serf tags", "error", err)
	}
}

// ServerMembers returns every server Serf knows about.
func (s *Server) serverMembers() []serverMember {
	var out []serverMember
	for _, mem := range s.serf.Members() {
		if sm, ok := parseServer(mem); ok {
			out = append(out, sm)
		}
	}
	return out
}

// Members returns every Serf member, servers and agents, ordered by name.
func (s *Server) Members() []structs.Member {
	mems := s.serf.Members()
	out := make([]structs.Member, 0, len(mems))
	for _, m := range mems {
		tags := make(map[string]string, len(m.Tags))
		for k, v := range m.Tags {
			tags[k] = v
		}
		out = append(out, structs.Member{
			Name:    m.Name,
			Addr:    net.JoinHostPort(m.Addr.String(), strconv.Itoa(int(m.Port))),
			Role:    m.Tags[node.TagRole],
			Region:  m.Tags[node.TagRegion],
			Status:  m.Status.String(),
			Tags:    tags,
			Refused: s.refusal(m.Name),
		})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
