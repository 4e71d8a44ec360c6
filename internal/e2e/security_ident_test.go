package e2e_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/httpapi/client"
	"github.com/atomcloud/atomfed/internal/node"
	"github.com/atomcloud/atomfed/internal/signing"
	"github.com/atomcloud/atomfed/internal/structs"
	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// recorder is a listener an attacker advertises as a member's http URL: it
// records the Authorization header of every request that reaches it.
type recorder struct {
	*httptest.Server
	mu   sync.Mutex
	seen []string // "METHOD path auth=<header>"
}

func newRecorder(t *testing.T, tlsCfg *tls.Config) *recorder {
	r := &recorder{}
	r.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen = append(r.seen, fmt.Sprintf("%s %s auth=%q", req.Method, req.URL.Path, req.Header.Get("Authorization")))
		r.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	}))
	if tlsCfg != nil {
		r.TLS = tlsCfg
		r.StartTLS()
	} else {
		r.Start()
	}
	t.Cleanup(r.Close)
	return r
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.seen...)
}

// rogueMember joins the federation's Serf pool from the test process with
// the gossip key (all a thief of a host's gossip key has) under name with
// tags.
func rogueMember(t *testing.T, c *procs.Cluster, name string, tags map[string]string) {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(c.Sec.GossipKey)
	if err != nil {
		t.Fatal(err)
	}
	tags[node.TagProtocolVersion] = strconv.Itoa(node.ProtocolVersion)
	s, err := node.StartSerf(node.SerfOptions{Name: name, DataDir: t.TempDir(), Bind: "127.0.0.1:0", GossipKey: key, Tags: tags})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown() })
	if _, err := s.Join(c.SerfAddrs(), true); err != nil {
		t.Fatalf("rogue %s joins: %v", name, err)
	}
}

// identView is what the identity attacks must leave unchanged.
type identView struct {
	Voters    []string
	Agents    map[string]string // node -> region
	Tokens    []string          // role/node/region
	Members   []string
	Regions   []string
	Databases map[string]string
}

func identState(t *testing.T, s *procs.ServerProc) identView {
	t.Helper()
	v := identView{Agents: map[string]string{}, Databases: map[string]string{}}
	testutil.Eventually(t, 20*time.Second, func() error {
		c := ctx(t, 10*time.Second)
		peers, err := s.Client.RaftConfiguration(c, nil)
		if err != nil {
			return err
		}
		v.Voters = nil
		for _, p := range peers {
			v.Voters = append(v.Voters, fmt.Sprintf("%s=%s voter=%v", p.ID, p.Address, p.Voter))
		}
		sort.Strings(v.Voters)
		agents, _, err := s.Client.Agents(c, "", nil)
		if err != nil {
			return err
		}
		for _, a := range agents {
			v.Agents[a.Node] = a.Region
		}
		toks, err := s.Client.ListTokens(c)
		if err != nil {
			return err
		}
		v.Tokens = nil
		for _, tk := range toks {
			v.Tokens = append(v.Tokens, tk.Role+"/"+tk.Node+"/"+tk.Region)
		}
		sort.Strings(v.Tokens)
		var trust struct {
			Members []*fsm.Member `json:"members"`
		}
		if _, err := s.Client.Do(c, http.MethodGet, "/v1/trust/members", nil, nil, &trust); err != nil {
			return err
		}
		v.Members = nil
		for _, m := range trust.Members {
			v.Members = append(v.Members, fmt.Sprintf("%s/%s/%d", m.ID, m.Kind, len(m.Keys)))
		}
		regions, _, err := s.Client.RegionViews(c, nil)
		if err != nil {
			return err
		}
		v.Regions = nil
		for _, r := range regions {
			v.Regions = append(v.Regions, fmt.Sprintf("%s %s %s %d", r.Name, r.URL, r.Tier, r.ModifyIndex))
			if r.Database != nil {
				v.Databases[r.Name] = fmt.Sprintf("%s:%d/%s", r.Database.Host, r.Database.Port, r.Database.Database)
			}
		}
		return nil
	})
	return v
}

// auditTypesAfter returns the types of the audit entries after index.
func auditTypesAfter(t *testing.T, s *procs.ServerProc, index uint64) []string {
	t.Helper()
	a, err := s.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range a.Recent {
		if e.Index > index {
			out = append(out, e.Type)
		}
	}
	return out
}

// TestIdentityAttacks attacks a real three-server TLS federation with real
// agents from what one compromised host holds: the gossip key (rogue Serf
// members tagged role=server and region=eu-west, a fake server URL), an
// agent's own token (acting for another node or region), and a wrong
// FEDERATION_TOKEN handed to an agent. Every attack is refused; the Raft
// configuration, the registry, tokens, members, regions and their
// databases stay as they were, and the audit chain records nothing the
// attacks tried.
func TestIdentityAttacks(t *testing.T) {
	c := startCluster(t)
	leader := waitLeader(t, c)
	logs, data := procs.LogDir(t), t.TempDir()
	startAgent := func(name, region, token string) *procs.AgentProc {
		t.Helper()
		cfg := procs.AgentConfig{Node: name, Region: region, DataDir: filepath.Join(data, name),
			HTTPAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)), SerfAddr: fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)),
			Join: c.SerfAddrs(), Token: token}
		a, err := procs.NewAgentProcWith(atomfedBin, logs, cfg, c.Sec)
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			a.Close()
			if t.Failed() {
				t.Logf("log of %s: %s\n%s", a.Node, a.LogPath, a.LogTail(30))
			}
		})
		return a
	}
	for _, r := range []string{"us-east", "eu-west"} {
		register(t, c, &fsm.Region{Name: r, URL: c.Servers[0].URL})
	}
	usEast := startAgent("us-east-a1", "us-east", "")
	euWest := startAgent("eu-west-a1", "eu-west", "")
	if usEast.Token == procs.Token || euWest.Token == procs.Token {
		t.Fatal("the harness made no bound agent token")
	}
	f := &federation{Cluster: c}
	f.waitProbe(t, "us-east", "")
	f.waitProbe(t, "eu-west", "")
	before := identState(t, leader)
	head, err := leader.Client.Audit(ctx(t, 10*time.Second), nil)
	if err != nil {
		t.Fatal(err)
	}

	// Listeners an attacker advertises: plain HTTP, and TLS with a
	// certificate of the federation's CA that is not a server's (an agent
	// host's), valid for 127.0.0.1.
	dir := t.TempDir()
	agentCert, err := c.Sec.CA.WriteNode(dir, "stolen-agent", c.Sec.CAPath, []string{"stolen-agent", tlsutil.AgentName, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := tls.LoadX509KeyPair(agentCert.Cert, agentCert.Key)
	if err != nil {
		t.Fatal(err)
	}
	plain := newRecorder(t, nil)
	fake := newRecorder(t, &tls.Config{Certificates: []tls.Certificate{stolen}})

	// Rogue members holding only the gossip key.
	rogueKey, err := signing.NewSigner()
	if err != nil {
		t.Fatal(err)
	}
	der, _ := pem.Decode(rogueKey.PublicPEM)
	rogueMember(t, c, "rogue-server", map[string]string{node.TagRole: node.RoleServer, node.TagRegion: "us-east",
		node.TagRaftAddr: fake.Listener.Addr().String(), node.TagHTTP: plain.URL, node.TagExpect: "3",
		node.TagPublicKey: base64.StdEncoding.EncodeToString(der.Bytes)})
	rogueJoined := time.Now()
	rogueMember(t, c, "rogue-twin", map[string]string{node.TagRole: node.RoleServer, node.TagRegion: "us-east",
		node.TagRaftAddr: leader.Config.RaftAddr, node.TagHTTP: fake.URL, node.TagExpect: "3"})
	rogueMember(t, c, "rogue-agent", map[string]string{node.TagRole: node.RoleAgent, node.TagRegion: "eu-west",
		node.TagHTTP: plain.URL, node.TagCapabilities: "probe", node.TagCapacity: "64"})
	// A fake server alone in region sa-east: an agent of sa-east asks the
	// servers of its own region first.
	rogueMember(t, c, "rogue-sa-server", map[string]string{node.TagRole: node.RoleServer, node.TagRegion: "sa-east",
		node.TagRaftAddr: fake.Listener.Addr().String(), node.TagHTTP: fake.URL, node.TagExpect: "3"})

	t.Run("rogue servers and agents are refused and listed", func(t *testing.T) {
		want := map[string]string{"rogue-server": "raft address", "rogue-twin": "not the member", "rogue-sa-server": "raft address", "rogue-agent": "no agent token is bound"}
		testutil.Eventually(t, 30*time.Second, func() error {
			l, err := c.Leader(ctx(t, 5*time.Second))
			if err != nil {
				return err
			}
			ms, err := l.Client.Members(ctx(t, 5*time.Second))
			if err != nil {
				return err
			}
			got := map[string]string{}
			for _, m := range ms {
				got[m.Name] = m.Refused
			}
			for name, why := range want {
				if !strings.Contains(got[name], why) {
					return fmt.Errorf("member %s: refused %q, want it to say %q", name, got[name], why)
				}
			}
			for _, ok := range []string{"us-east-a1", "eu-west-a1", c.Servers[0].ID()} {
				if got[ok] != "" {
					t.Fatalf("a real member is listed as refused: %s: %s", ok, got[ok])
				}
			}
			return nil
		})
		for reason, min := range map[string]float64{"server_identity": 3, "agent_unbound": 1} {
			v, err := leader.Metric(ctx(t, 5*time.Second), `atomfed_serf_members_refused_total{reason="`+reason+`"}`)
			if err != nil || v < min {
				t.Errorf("refusals counted for %s: %v, %v; want at least %v", reason, v, err, min)
			}
		}
	})

	t.Run("a rogue server's gossiped key is not recorded as a server's", func(t *testing.T) {
		// The leader records server keys every 2 s: watch three passes.
		for time.Since(rogueJoined) < 6*time.Second {
			var m fsm.Member
			_, err := leader.Client.Do(ctx(t, 5*time.Second), http.MethodGet, "/v1/trust/members/rogue-server", nil, nil, &m)
			if client.StatusOf(err) != http.StatusNotFound {
				t.Fatalf("the rogue server is a trust member: %+v, %v", m, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})

	t.Run("a rogue agent tagged eu-west gets no registry entry and no tasks", func(t *testing.T) {
		_, _, err := leader.Client.Agents(ctx(t, 5*time.Second), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		var ag fsm.Agent
		_, err = leader.Client.Do(ctx(t, 5*time.Second), http.MethodGet, "/v1/agents/rogue-agent", nil, nil, &ag)
		if client.StatusOf(err) != http.StatusNotFound {
			t.Fatalf("the rogue agent in the registry: %+v, %v", ag, err)
		}
		tasks, _, err := leader.Client.Tasks(ctx(t, 5*time.Second), "", "", "rogue-agent", nil)
		if err != nil || len(tasks) != 0 {
			t.Fatalf("tasks on the rogue agent: %v, %v", tasks, err)
		}
	})

	t.Run("probes send no credential to advertised URLs", func(t *testing.T) {
		st, err := leader.Client.PolicyStatus(ctx(t, 30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var p4 *structs.PolicyResult
		for i := range st.Policies {
			if st.Policies[i].ID == "P4" {
				p4 = &st.Policies[i]
			}
		}
		if p4 == nil {
			t.Fatal("no P4")
		}
		ev := fmt.Sprint(p4.Evidence)
		for _, name := range []string{"rogue-server", "rogue-twin", "rogue-agent", "rogue-sa-server"} {
			if !strings.Contains(ev, name+" (") {
				t.Errorf("P4 evidence does not list %s as not contacted: %s", name, ev)
			}
		}
		for _, r := range []*recorder{plain, fake} {
			if got := r.requests(); len(got) != 0 {
				t.Fatalf("a listener advertised by a rogue member was called: %v", got)
			}
		}
	})

	t.Run("an agent never sends its token to a fake server", func(t *testing.T) {
		sa := startAgent("sa-east-a1", "sa-east", "")
		// It asks the fake server of its own region first: the handshake
		// fails on the certificate, and it goes on to a real server.
		testutil.Eventually(t, 30*time.Second, func() error {
			var ag fsm.Agent
			if _, err := leader.Client.Do(ctx(t, 5*time.Second), http.MethodGet, "/v1/agents/sa-east-a1", nil, nil, &ag); err != nil {
				return err
			}
			if !sa.LogContains("agent key registered") {
				return fmt.Errorf("the sa-east agent has not registered its key through a real server yet")
			}
			return nil
		})
		if got := fake.requests(); len(got) != 0 {
			t.Fatalf("the fake server received requests: %v", got)
		}
	})

	t.Run("an agent token acts only as its agent, for its region", func(t *testing.T) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: c.Sec.TLSConfig()}}
		send := func(s *procs.ServerProc, method, path, body string) (int, string) {
			req, _ := http.NewRequest(method, s.URL+path, strings.NewReader(body))
			req.Header.Set("Authorization", "Bearer "+euWest.Token)
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		db := `{"endpoint":{"host":"evil.example.com","port":5432,"database":"app"},"node":"eu-west-a1"}`
		for _, a := range []struct{ name, method, path, body, code string }{
			{"repoint us-east's database", http.MethodPut, "/v1/regions/us-east/database", db, "token_binding"},
			{"report as us-east-a1", http.MethodPost, "/v1/agents/us-east-a1/report", `{"node":"us-east-a1"}`, "token_binding"},
			{"hand back us-east-a1's tasks", http.MethodPost, "/v1/agents/us-east-a1/leave", `{}`, "token_binding"},
			{"watch us-east-a1's tasks", http.MethodGet, "/v1/agents/us-east-a1/tasks", "", "token_binding"},
			{"register a key for us-east-a1", http.MethodPost, "/v1/trust/members", `{"id":"us-east-a1","kind":"agent","public_key":"x"}`, "token_binding"},
			{"update region eu-west", http.MethodPut, "/v1/regions/eu-west", `{"name":"eu-west","url":"https://evil.example.com"}`, "forbidden_role"},
			{"register a region", http.MethodPost, "/region/register", `{"name":"evil","url":"https://evil.example.com"}`, "forbidden_role"},
			{"make a token", http.MethodPost, "/v1/tokens", `{"role":"operator"}`, "forbidden_role"},
		} {
			for _, s := range c.Servers {
				code, body := send(s, a.method, a.path, a.body)
				if code != http.StatusForbidden || !strings.Contains(body, `"`+a.code+`"`) {
					t.Errorf("%s via %s: %d %s, want 403 %s", a.name, s.ID(), code, body, a.code)
				}
			}
		}
	})

	t.Run("an agent refuses a token that is not its own", func(t *testing.T) {
		for _, tc := range []struct {
			name, token, want string
		}{
			{"us-east-a8", procs.Token, "a token of role operator"},
			{"us-east-a9", euWest.Token, "bound to agent eu-west-a1 in region eu-west"},
		} {
			a := startAgent(tc.name, "us-east", tc.token)
			code, err := a.Wait(60 * time.Second)
			if err != nil || code == 0 {
				t.Fatalf("agent %s with the wrong token: exit %d, %v\n%s", tc.name, code, err, a.LogTail(10))
			}
			mustContain(t, tc.name+"'s refusal", a.LogTail(10), "refusing to start", tc.want)
			if bytes.Contains([]byte(a.LogTail(50)), []byte(tc.token)) {
				t.Errorf("agent %s logged its token", tc.name)
			}
		}
	})

	t.Run("state and audit chain unchanged", func(t *testing.T) {
		after := identState(t, leader)
		// Only the sa-east agent, admitted with its own token, was added.
		if after.Agents["sa-east-a1"] != "sa-east" {
			t.Fatalf("the sa-east agent is not registered: %+v", after.Agents)
		}
		delete(after.Agents, "sa-east-a1")
		var toks []string
		for _, tk := range after.Tokens {
			if tk != "agent/sa-east-a1/sa-east" {
				toks = append(toks, tk)
			}
		}
		after.Tokens = toks
		var members []string
		for _, m := range after.Members {
			if !strings.HasPrefix(m, "sa-east-a1/") {
				members = append(members, m)
			}
		}
		after.Members = members
		if fmt.Sprint(after) != fmt.Sprint(before) {
			t.Fatalf("the attacks changed the federation:\nbefore %+v\nafter  %+v", before, after)
		}
		// The chain moved only with what the real agents did (heartbeats,
		// the sa-east agent's admission, its token and key, the
		// refused agents' scheduling): none of the attacks' commands.
		forbidden := map[string]bool{}
		for _, t := range []fsm.MessageType{fsm.RegionUpsertType, fsm.RegionDatabaseType, fsm.AgentLeaveType, fsm.KeyRotateType, fsm.PolicySetType} {
			forbidden[t.String()] = true
		}
		for _, typ := range auditTypesAfter(t, leader, head.Index) {
			if forbidden[typ] {
				t.Errorf("the audit chain records a %s during the attacks", typ)
			}
		}
	})
}

// TestRogueServerCannotJoinTheFirstConfiguration: two real servers expect a
// third; a rogue Serf member with the gossip key, tagged role=server with
// the same bootstrap-expect and an agent's certificate on its Raft address,
// completes the count. The servers do not bootstrap with it: no leader,
// no Raft configuration, however long they see it.
func TestRogueServerCannotJoinTheFirstConfiguration(t *testing.T) {
	c, err := procs.NewCluster(procs.ClusterOptions{
		Bin: atomfedBin, Servers: 2, Dir: t.TempDir(),
		Port:      func() (int, error) { return testutil.FreePort(t), nil },
		Configure: func(_ int, cfg *procs.ServerConfig) error { cfg.BootstrapExpect = 3; return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, s := range c.Servers {
				t.Logf("log of %s:\n%s", s.ID(), s.LogTail(30))
			}
		}
		c.Close()
	})
	dir := t.TempDir()
	agentCert, err := c.Sec.CA.WriteNode(dir, "stolen-agent", c.Sec.CAPath, []string{"stolen-agent", tlsutil.AgentName, "localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := tls.LoadX509KeyPair(agentCert.Cert, agentCert.Key)
	if err != nil {
		t.Fatal(err)
	}
	fake := newRecorder(t, &tls.Config{Certificates: []tls.Certificate{stolen}})
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, s := range c.Servers {
			if _, err := s.Health(ctx(t, 2*time.Second)); err != nil {
				return err
			}
		}
		return nil
	})
	rogueMember(t, c, "rogue-boot", map[string]string{node.TagRole: node.RoleServer, node.TagRegion: "us-east",
		node.TagRaftAddr: fake.Listener.Addr().String(), node.TagHTTP: fake.URL, node.TagExpect: "3"})
	// Both servers see three servers expecting three (they bootstrap
	// within a second of that, checking every second): watch five checks.
	testutil.Eventually(t, 20*time.Second, func() error {
		for _, s := range c.Servers {
			ms, err := s.Client.Members(ctx(t, 2*time.Second))
			if err != nil {
				return err
			}
			if len(ms) != 3 {
				return fmt.Errorf("%s sees %d members", s.ID(), len(ms))
			}
		}
		return nil
	})
	for seen := time.Now(); time.Since(seen) < 5*time.Second; time.Sleep(250 * time.Millisecond) {
		for _, s := range c.Servers {
			h, err := s.Health(ctx(t, 2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if h.KnownLeader || s.LogContains("bootstrapped a new cluster") {
				t.Fatalf("%s bootstrapped with the rogue member: leader %q", s.ID(), h.Leader)
			}
		}
	}
}
