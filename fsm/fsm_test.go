package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/atomcloud/atomfed/internal/signing"
)

// harness applies commands at increasing indexes, as raft would. It signs
// region and agent writes that carry no signature with a per-member key, so
// tests about other things need not.
type harness struct {
	t     testing.TB
	f     *FSM
	index uint64
	keys  map[string]*signing.Signer
	nonce int
	log   []*raft.Log // every entry applied, to replay elsewhere
}

func newHarness(t testing.TB) *harness {
	return &harness{t: t, f: New(nil, prometheus.NewRegistry()), keys: map[string]*signing.Signer{}}
}

// key returns the test key of a member, made on first use.
func (h *harness) key(member string) *signing.Signer {
	if h.keys == nil {
		h.keys = map[string]*signing.Signer{}
	}
	if k := h.keys[member]; k != nil {
		return k
	}
	k, err := signing.NewSigner()
	if err != nil {
		panic(err)
	}
	h.keys[member] = k
	return k
}

// sign returns a signed auth by member's key over body at time at.
func (h *harness) sign(member string, body []byte, at int64) *SignedAuth {
	k := h.key(member)
	sig, err := k.Sign(body)
	if err != nil {
		panic(err)
	}
	h.nonce++
	return &SignedAuth{KeyID: k.KeyID, Signature: sig, Body: body, Nonce: fmt.Sprintf("nonce-%08d", h.nonce), Timestamp: at}
}

// autosign fills in the signatures the FSM requires.
func (h *harness) autosign(body any) any {
	switch c := body.(type) {
	case RegionUpsert:
		if c.Auth == nil {
			c.Auth = h.sign(c.Region.Name, []byte(c.Region.Name+c.Region.URL), c.At)
			c.PublicKey = string(h.key(c.Region.Name).PublicPEM)
		}
		return c
	case AgentReport:
		if c.Auth == nil {
			h.ensureAgentMember(c.Node, c.At)
			c.Auth = h.sign(c.Node, []byte("report "+c.Node), c.At)
		}
		return c
	case AgentLeave:
		if c.Auth == nil {
			h.ensureAgentMember(c.Node, c.At)
			c.Auth = h.sign(c.Node, []byte("leave "+c.Node), c.At)
		}
		return c
	case RegionDatabaseReport:
		if c.Auth == nil {
			h.ensureAgentMember(c.Node, c.At)
			c.Auth = h.sign(c.Node, []byte("database "+c.Node), c.At)
		}
		return c
	}
	return body
}

func (h *harness) ensureAgentMember(node string, at int64) {
	exists := false
	h.f.Read(func(s *State) { exists = s.Members[node] != nil })
	if exists {
		return
	}
	body := []byte("register " + node)
	h.mustApply(MemberRegisterType, MemberRegister{ID: node, Kind: MemberAgent, PublicKey: string(h.key(node).PublicPEM),
		Auth: h.sign(node, body, at), At: at})
}

func (h *harness) apply(typ MessageType, body any) *ApplyResult {
	h.t.Helper()
	body = h.autosign(body)
	data, err := Encode(typ, body)
	if err != nil {
		h.t.Fatalf("encode: %v", err)
	}
	h.index++
	l := &raft.Log{Index: h.index, Term: 3, Type: raft.LogCommand, Data: data}
	h.log = append(h.log, l)
	res := h.f.Apply(l)
	if res == nil {
		return nil
	}
	return res.(*ApplyResult)
}

func (h *harness) mustApply(typ MessageType, body any) *ApplyResult {
	h.t.Helper()
	res := h.apply(typ, body)
	if res == nil || res.Err != nil {
		h.t.Fatalf("apply %s: %+v", typ, res)
	}
	return res
}

func cas(n uint64) *uint64 { return &n }

func testRegion(name string) Region {
	return Region{Name: name, URL: "https://" + name + ".example.com:8401", Tier: TierStaging,
		Location: Location{Lat: 10, Lon: 20}, Labels: map[string]string{"env": "test"}}
}

func seed(h *harness) {
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: 100})
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("eu-west"), At: 101})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Mirrors: []string{"eu-west"},
		Tables: []TenantTable{{Name: "orders", PIIColumns: []string{"email", "phone"}}}}, At: 102})
}

func TestEncodeLayout(t *testing.T) {
	for _, tc := range []struct {
		name   string
		encode func(MessageType, any) ([]byte, error)
		codec  byte
	}{{"msgpack", Encode, codecMsgpack}, {"json", EncodeJSON, codecJSON}} {
		data, err := tc.encode(TenantDeleteType, TenantDelete{ID: "acme", At: 5})
		if err != nil {
			t.Fatal(err)
		}
		if data[0] != byte(TenantDeleteType) || data[1] != tc.codec {
			t.Fatalf("%s: header = %v, want type then codec version %d", tc.name, data[:2], tc.codec)
		}
		var back TenantDelete
		if err := decodeBody(data[1], data[2:], &back); err != nil || back.ID != "acme" || back.At != 5 {
			t.Fatalf("%s: round trip: %+v, %v", tc.name, back, err)
		}
		if err := decodeBody(9, data[2:], &back); err == nil {
			t.Fatalf("%s: an unknown codec version decoded", tc.name)
		}
	}
}

// TestCommandRoundTrip applies one command of every type and checks its
// effect on the state, so every registered command is exercised.
// approvalOnly are the commands that apply only through their approval.
var approvalOnly = map[MessageType]bool{SnapshotRestoreType: true}

// refusedInRoundTrip are commands the round trip only sees refused, with
// the code: their success needs a fixture of their own (failover_test.go).
var refusedInRoundTrip = map[MessageType]string{FailoverAutoType: CodeHomeIsUp}

func TestCommandRoundTrip(t *testing.T) {
	h := newHarness(t)
	seen := map[MessageType]bool{}
	check := func(typ MessageType, body any, verify func(s *State, res *ApplyResult)) {
		sameInBothCodecs(t, typ, h.autosign(body))
		if code := refusedInRoundTrip[typ]; code != "" {
			if res := h.apply(typ, body); res == nil || codeOf(res.Err) != code {
				t.Fatalf("%s: %+v, want the refusal %s", typ, res, code)
			}
			seen[typ] = true
			return
		}
		if approvalOnly[typ] {
			// Applies only as the command of its approval: sent alone, it
			// is refused (its approval round trip is in its own test).
			if res := h.apply(typ, body); res == nil || codeOf(res.Err) != "approval_required" {
				t.Fatalf("%s applied without its approval: %+v", typ, res)
			}
			seen[typ] = true
			return
		}
		res := h.mustApply(typ, body)
		seen[typ] = true
		// A follower decodes a forwarded result into ResultValue: it must
		// be the type Apply returns (results that are maps decode as maps).
		if rv := ResultValue(typ); res.Value != nil {
			_, generic := rv.(*map[string]any)
			if generic && reflect.TypeOf(res.Value).Kind() != reflect.Map || !generic && reflect.TypeOf(res.Value) != reflect.TypeOf(rv) {
				t.Errorf("%s: Apply returns %T, a follower decodes the forwarded result as %T", typ, res.Value, rv)
			}
			// and it answers the client the same JSON the leader would.
			b, err := MarshalResult(res.Value)
			if err != nil {
				t.Fatalf("%s: marshal result: %v", typ, err)
			}
			if err := UnmarshalResult(b, rv); err != nil {
				t.Fatalf("%s: unmarshal result: %v", typ, err)
			}
			want, _ := json.Marshal(res.Value)
			got, _ := json.Marshal(rv)
			if !bytes.Equal(want, got) {
				t.Errorf("%s: forwarded result answers\n%s\nthe leader answers\n%s", typ, got, want)
			}
		}
		h.f.Read(func(s *State) { verify(s, res) })
	}
	check(RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: 7}, func(s *State, res *ApplyResult) {
		r := s.Regions["us-east"]
		if r == nil || r.CreateIndex != res.Index || r.ModifyIndex != res.Index || r.CreatedAt != 7 || r.Status != RegionActive {
			t.Fatalf("region after upsert: %+v", r)
		}
		if !reflect.DeepEqual(res.Value, r) {
			t.Fatalf("apply result %+v differs from stored %+v", res.Value, r)
		}
	})
	check(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east",
		Tables: []TenantTable{{Name: "b"}, {Name: "a", PIIColumns: []string{"z", "y"}}}}, At: 8}, func(s *State, res *ApplyResult) {
		tn := s.Tenants["acme"]
		if tn == nil || tn.ModifyIndex != res.Index || tn.Tables[0].Name != "a" || tn.Tables[0].PIIColumns[0] != "y" {
			t.Fatalf("tenant after upsert (want sorted tables and columns): %+v", tn)
		}
	})
	check(TenantPatchType, TenantPatch{ID: "acme", Patch: json.RawMessage(`{"labels":{"tier":"gold"},"tables":[{"name":"c"}]}`), At: 9}, func(s *State, res *ApplyResult) {
		tn := s.Tenants["acme"]
		if tn == nil || tn.ModifyIndex != res.Index || tn.HomeRegion != "us-east" || len(tn.Tables) != 1 || tn.Tables[0].Name != "c" || tn.Labels["tier"] != "gold" || tn.CreatedAt != 8 {
			t.Fatalf("tenant after patch (want home kept, tables replaced, label added): %+v", tn)
		}
	})
	check(TenantDeleteType, TenantDelete{ID: "acme", At: 9}, func(s *State, res *ApplyResult) {
		if s.Tenants["acme"] != nil || res.Value.(*Deleted).Name != "acme" {
			t.Fatalf("tenant still there after delete")
		}
	})
	agentRoundTrips(t, check)
	switchoverRoundTrips(t, h, check)
	divergenceRoundTrips(t, h, check)
	backupRoundTrips(t, check)
	trustRoundTrips(t, h, check)
	failoverRoundTrips(t, h, check) // after trust: its policy gates nothing
	replicationRoundTrips(t, check) // after trust: it deletes a region, which the default policy gates
	check(RegionDeleteType, RegionDelete{Name: "us-east", At: 10}, func(s *State, res *ApplyResult) {
		if s.Regions["us-east"] != nil {
			t.Fatalf("region still there after delete")
		}
		if s.TableIndex(TableRegions) != res.Index {
			t.Fatalf("regions index %d, want %d", s.TableIndex(TableRegions), res.Index)
		}
	})
	for _, typ := range RegisteredTypes() {
		if !seen[typ] {
			t.Errorf("command %s has no round-trip case", typ)
		}
	}
}

func TestApplyRejections(t *testing.T) {
	cases := []struct {
		name string
		typ  MessageType
		body any
		kind error
		code string
	}{
		{"region bad name", RegionUpsertType, RegionUpsert{Region: Region{Name: "Bad_Name", URL: "https://x"}}, ErrInvalid, "invalid_region_name"},
		{"region bad url", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok", URL: "ftp://x"}}, ErrInvalid, "invalid_url"},
		{"region no url", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok"}}, ErrInvalid, "invalid_url"},
		{"region bad tier", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok", URL: "https://x", Tier: "gold"}}, ErrInvalid, "invalid_tier"},
		{"region bad status", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok", URL: "https://x", Status: "on"}}, ErrInvalid, "invalid_status"},
		{"region bad lat", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok", URL: "https://x", Location: Location{Lat: 91}}}, ErrInvalid, "invalid_location"},
		{"region bad label", RegionUpsertType, RegionUpsert{Region: Region{Name: "ok", URL: "https://x", Labels: map[string]string{"": "v"}}}, ErrInvalid, "invalid_labels"},
		{"region stale cas", RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), CAS: cas(99)}, ErrConflict, "cas_conflict"},
		{"region cas 0 exists", RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), CAS: cas(0)}, ErrConflict, "cas_conflict"},
		{"region cas on missing", RegionUpsertType, RegionUpsert{Region: testRegion("nowhere"), CAS: cas(5)}, ErrConflict, "cas_conflict"},
		{"region delete missing", RegionDeleteType, RegionDelete{Name: "nowhere"}, ErrNotFound, "region_not_found"},
		{"region delete home in use", RegionDeleteType, RegionDelete{Name: "us-east"}, ErrFailedPrecondition, "region_in_use"},
		{"region delete mirror in use", RegionDeleteType, RegionDelete{Name: "eu-west"}, ErrFailedPrecondition, "region_in_use"},
		{"region delete stale cas", RegionDeleteType, RegionDelete{Name: "us-east", CAS: cas(99)}, ErrConflict, "cas_conflict"},
		{"tenant bad id", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "-x", HomeRegion: "us-east"}}, ErrInvalid, "invalid_tenant_id"},
		{"tenant unknown home", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "mars"}}, ErrInvalid, "unknown_region"},
		{"tenant unknown mirror", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"mars"}}}, ErrInvalid, "unknown_region"},
		{"tenant mirror is home", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"us-east"}}}, ErrInvalid, "invalid_mirrors"},
		{"tenant duplicate mirror", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Mirrors: []string{"eu-west", "eu-west"}}}, ErrInvalid, "invalid_mirrors"},
		{"tenant pii is key", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Tables: []TenantTable{{Name: "o", PIIColumns: []string{"tenant_id"}}}}}, ErrInvalid, "invalid_tables"},
		{"tenant bad table", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Tables: []TenantTable{{Name: "Drop Table"}}}}, ErrInvalid, "invalid_tables"},
		{"tenant duplicate table", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t1", HomeRegion: "us-east", Tables: []TenantTable{{Name: "o"}, {Name: "o"}}}}, ErrInvalid, "invalid_tables"},
		{"tenant stale cas", TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east"}, CAS: cas(1)}, ErrConflict, "cas_conflict"},
		{"tenant delete missing", TenantDeleteType, TenantDelete{ID: "nobody"}, ErrNotFound, "tenant_not_found"},
		{"tenant delete stale cas", TenantDeleteType, TenantDelete{ID: "acme", CAS: cas(2)}, ErrConflict, "cas_conflict"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			seed(h)
			before := snapshotBytes(t, h.f)
			watch := h.f.WatchCh()
			res := h.apply(tc.typ, tc.body)
			if res == nil || res.Err == nil {
				t.Fatalf("accepted: %+v", res)
			}
			var fe *Error
			if !errors.As(res.Err, &fe) || !errors.Is(res.Err, tc.kind) || fe.Code != tc.code {
				t.Fatalf("got %v (code %q), want kind %v code %q", res.Err, codeOf(res.Err), tc.kind, tc.code)
			}
			if fe.Message == "" {
				t.Fatal("rejection without a message")
			}
			if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
				t.Fatalf("a rejected command changed the state:\nbefore %s\nafter  %s", before, after)
			}
			select {
			case <-watch:
				t.Fatal("a rejected command woke blocked readers")
			default:
			}
		})
	}
}

func codeOf(err error) string {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	return ""
}

func TestCASSucceedsWithCurrentIndex(t *testing.T) {
	h := newHarness(t)
	seed(h)
	var cur uint64
	h.f.Read(func(s *State) { cur = s.Tenants["acme"].ModifyIndex })
	res := h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "eu-west"}, CAS: cas(cur), At: 200})
	tn := res.Value.(*Tenant)
	if tn.ModifyIndex != res.Index || tn.CreateIndex == tn.ModifyIndex || tn.CreatedAt != 102 || tn.UpdatedAt != 200 {
		t.Fatalf("update kept the wrong indexes or times: %+v", tn)
	}
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "new", HomeRegion: "eu-west"}, CAS: cas(0)})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "new", CAS: cas(h.index)})
}

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	var buf bytes.Buffer
	f.Read(func(s *State) {
		if err := WriteSnapshot(&buf, s); err != nil {
			t.Fatal(err)
		}
	})
	return buf.Bytes()
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestSnapshotRestoreEquality(t *testing.T) {
	h := newHarness(t)
	seed(h)
	for i := 0; i < 300; i++ { // more than the audit ring holds
		h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t" + string(rune('a'+i%26)), HomeRegion: "us-east",
			Labels: map[string]string{"n": strings.Repeat("x", i%7)}}, At: int64(i)})
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after Snapshot() must not leak into the captured view.
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("late")})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	restored := New(nil, nil)
	watch := restored.WatchCh()
	if err := restored.Restore(ioNopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-watch:
	default:
		t.Fatal("restore did not wake blocked readers")
	}
	var late bool
	restored.Read(func(s *State) { _, late = s.Regions["late"] })
	if late {
		t.Fatal("snapshot contains a change made after Snapshot()")
	}
	if again := snapshotBytes(t, restored); !bytes.Equal(again, sink.Bytes()) {
		t.Fatal("restored state persists to different bytes")
	}
	var orig, got State
	h.f.Read(func(s *State) { orig = *s.clone() })
	restored.Read(func(s *State) { got = *s.clone() })
	delete(orig.Regions, "late")
	if !reflect.DeepEqual(orig.Tenants, got.Tenants) || !reflect.DeepEqual(orig.Regions, got.Regions) {
		t.Fatal("restored objects differ")
	}
	if got.AuditHead == GenesisHash || len(got.Audit) != auditRingSize {
		t.Fatalf("audit not restored: head %s, %d entries", got.AuditHead, len(got.Audit))
	}
}

type ioNopCloser struct{ *bytes.Reader }

func (ioNopCloser) Close() error { return nil }

func TestRestoreRefusesBadSnapshotsAndKeepsState(t *testing.T) {
	h := newHarness(t)
	seed(h)
	before := snapshotBytes(t, h.f)
	good := string(before)
	bad := []string{
		"",
		"not json",
		`{"version":2}`,
		strings.Replace(good, `"version":1`, `"version":1,"extra":true`, 1),
		strings.Replace(good, `"name":"us-east"`, `"name":"US EAST"`, 1),
		strings.Replace(good, `"audit_head":"`, `"audit_head":"zz`, 1),
		good[:len(good)/2],
	}
	for i, b := range bad {
		if err := h.f.Restore(ioNopCloser{bytes.NewReader([]byte(b))}); err == nil {
			t.Errorf("case %d: bad snapshot restored", i)
		}
		if after := snapshotBytes(t, h.f); !bytes.Equal(before, after) {
			t.Fatalf("case %d: a refused restore changed the state", i)
		}
	}
}

func TestAuditChain(t *testing.T) {
	a := newHarness(t)
	seed(a)
	b := New(nil, nil)
	b.ApplyBatch(a.log) // the same log, as a replica would apply it
	headA, idxA := a.f.AuditHead()
	headB, _ := b.AuditHead()
	if headA != headB || headA == GenesisHash {
		t.Fatalf("same commands, different heads: %s vs %s", headA, headB)
	}
	if idxA != a.index {
		t.Fatalf("audit index %d, want %d", idxA, a.index)
	}
	// Recompute the chain independently from the log.
	want := GenesisHash
	h := newHarness(t)
	bodies := []struct {
		typ  MessageType
		body any
	}{
		{RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: 100}},
		{RegionUpsertType, RegionUpsert{Region: testRegion("eu-west"), At: 101}},
	}
	for i, c := range bodies {
		c.body = h.autosign(c.body)
		data, _ := Encode(c.typ, c.body)
		prev, _ := hex.DecodeString(want)
		sum := sha256.New()
		sum.Write(prev)
		var ib [8]byte
		binary.BigEndian.PutUint64(ib[:], uint64(i+1))
		sum.Write(ib[:])
		sum.Write([]byte{byte(c.typ)})
		sum.Write(data[1:])
		want = hex.EncodeToString(sum.Sum(nil))
		h.mustApply(c.typ, c.body)
	}
	if got, _ := h.f.AuditHead(); got != want {
		t.Fatalf("audit head %s, independent sha256(prev||index||type||body) gives %s", got, want)
	}
	// A rejection does not extend the chain.
	h.apply(RegionDeleteType, RegionDelete{Name: "nowhere"})
	if got, _ := h.f.AuditHead(); got != want {
		t.Fatal("a rejected command extended the audit chain")
	}
	var recent []AuditEntry
	h.f.Read(func(s *State) { recent = s.RecentAudit() })
	if len(recent) != 2 || recent[1].Hash != want || recent[0].Type != "region_upsert" || recent[1].At != 101 {
		t.Fatalf("recent audit entries: %+v", recent)
	}
}

// stateWithoutAudit is a state's snapshot without the audit chain and
// the index, which a refusal moves.
func stateWithoutAudit(t *testing.T, f *FSM) string {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(snapshotBytes(t, f), &doc); err != nil {
		t.Fatal(err)
	}
	delete(doc, "audit_head")
	delete(doc, "audit")
	delete(doc, "index")
	delete(doc, "indexes")
	b, _ := json.Marshal(doc)
	return string(b)
}

// TestUndecodableEntriesAreRefusedTheSameEverywhere: a committed entry of
// a known type that does not decode does not stop the FSM. Two replicas
// refuse it the same way: the same error, the same audit head, an audit
// entry that says refused, and no other change.
func TestUndecodableEntriesAreRefusedTheSameEverywhere(t *testing.T) {
	cases := map[string][]byte{
		"empty":              {},
		"too short":          {byte(RegionUpsertType)},
		"bad json":           append([]byte{byte(TenantUpsertType), codecJSON}, []byte("{not json")...),
		"unknown codec":      append([]byte{byte(TenantUpsertType), 9}, []byte("{}")...),
		"wrong field type":   append([]byte{byte(RegionDeleteType), codecJSON}, []byte(`{"name":5}`)...),
		"empty after header": {byte(TenantDeleteType), codecJSON},
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t)
			seed(h)
			// A second replica with the same state.
			other := New(nil, nil)
			if err := other.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, h.f)))); err != nil {
				t.Fatal(err)
			}
			var heads []string
			for replica, f := range []*FSM{h.f, other} {
				before := stateWithoutAudit(t, f)
				head, _ := f.AuditHead()
				res, _ := f.Apply(&raft.Log{Index: 42, Type: raft.LogCommand, Data: data}).(*ApplyResult)
				if res == nil || codeOf(res.Err) != "undecodable_command" || !strings.Contains(res.Err.Error(), "entry 42") {
					t.Fatalf("replica %d: %+v, want undecodable_command naming the entry", replica, res)
				}
				if stateWithoutAudit(t, f) != before {
					t.Fatalf("replica %d: the refusal changed the state", replica)
				}
				after, _ := f.AuditHead()
				var recent []AuditEntry
				f.Read(func(s *State) { recent = s.RecentAudit() })
				if last := recent[len(recent)-1]; after == head || last.Index != 42 || !strings.HasPrefix(last.Type, "refused:") {
					t.Fatalf("replica %d: the audit chain does not record the refusal: %+v", replica, last)
				}
				heads = append(heads, after)
			}
			if heads[0] != heads[1] {
				t.Fatalf("the replicas refused differently: %s vs %s", heads[0], heads[1])
			}
			// The FSM keeps applying.
			h.index = 42
			h.mustApply(TenantDeleteType, TenantDelete{ID: "acme", At: 200})
		})
	}
}

// TestUnknownCommandTypeStopsTheServer: a type this server does not know
// (a newer leader's) stops it rather than letting it diverge, naming the
// index and what to do.
func TestUnknownCommandTypeStopsTheServer(t *testing.T) {
	f := New(nil, nil)
	defer func() {
		v := recover()
		if v == nil {
			t.Fatal("an unknown command type applied")
		}
		if msg := fmt.Sprint(v); !strings.Contains(msg, "index 42") || !strings.Contains(msg, "upgrade") {
			t.Fatalf("the stop does not name the index and the upgrade: %v", v)
		}
	}()
	f.Apply(&raft.Log{Index: 42, Type: raft.LogCommand, Data: []byte{79, codecJSON, '{', '}'}})
}

func TestUnknownTypeWithIgnoreFlagIsSkipped(t *testing.T) {
	h := newHarness(t)
	seed(h)
	before := snapshotBytes(t, h.f)
	res := h.f.Apply(&raft.Log{Index: 99, Type: raft.LogCommand, Data: []byte{byte(IgnoreUnknownTypeFlag | 60), codecJSON, '{', '}'}})
	if res != nil {
		t.Fatalf("ignored command returned %v", res)
	}
	if !bytes.Equal(before, snapshotBytes(t, h.f)) {
		t.Fatal("ignored command changed the state")
	}
}

func TestApplyBatchMixedEntries(t *testing.T) {
	f := New(nil, nil)
	h := newHarness(t)
	enc := func(typ MessageType, body any) []byte { d, _ := Encode(typ, h.autosign(body)); return d }
	logs := []*raft.Log{
		{Index: 1, Type: raft.LogCommand, Data: enc(RegionUpsertType, RegionUpsert{Region: testRegion("a")})},
		{Index: 2, Type: raft.LogConfiguration},
		{Index: 3, Type: raft.LogCommand, Data: enc(RegionDeleteType, RegionDelete{Name: "zz"})},
		{Index: 4, Type: raft.LogCommand, Data: enc(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t", HomeRegion: "a"}})},
	}
	watch := f.WatchCh()
	out := f.ApplyBatch(logs)
	if len(out) != len(logs) {
		t.Fatalf("%d responses for %d entries", len(out), len(logs))
	}
	if out[1] != nil {
		t.Fatalf("configuration entry got response %v", out[1])
	}
	if r := out[2].(*ApplyResult); r.Err == nil || r.Index != 3 {
		t.Fatalf("entry 3: %+v", r)
	}
	if r := out[3].(*ApplyResult); r.Err != nil || r.Index != 4 {
		t.Fatalf("entry 4: %+v", r)
	}
	select {
	case <-watch:
	default:
		t.Fatal("batch with changes did not wake readers")
	}
	if f.Index() != 4 {
		t.Fatalf("state index %d, want 4", f.Index())
	}
}

func TestTableIndexes(t *testing.T) {
	h := newHarness(t)
	seed(h)
	var regions, tenants uint64
	h.f.Read(func(s *State) { regions, tenants = s.TableIndex(TableRegions), s.TableIndex(TableTenants) })
	if regions != 2 || tenants != 3 {
		t.Fatalf("table indexes regions=%d tenants=%d, want 2 and 3", regions, tenants)
	}
	h.mustApply(RegionUpsertType, RegionUpsert{Region: testRegion("ap-south")})
	h.f.Read(func(s *State) { regions, tenants = s.TableIndex(TableRegions), s.TableIndex(TableTenants) })
	if regions != 4 || tenants != 3 {
		t.Fatalf("after a region write: regions=%d tenants=%d, want 4 and 3", regions, tenants)
	}
}

// sameInBothCodecs checks that a command decodes to the same value from
// MessagePack (what servers write) as from JSON (what older logs and
// approvals hold).
func sameInBothCodecs(t *testing.T, typ MessageType, body any) {
	t.Helper()
	mp, err := Encode(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	js, err := EncodeJSON(typ, body)
	if err != nil {
		t.Fatal(err)
	}
	rt := reflect.TypeOf(body)
	a, b := reflect.New(rt), reflect.New(rt)
	if err := decodeBody(mp[1], mp[2:], a.Interface()); err != nil {
		t.Fatalf("%s: msgpack: %v", typ, err)
	}
	if err := decodeBody(js[1], js[2:], b.Interface()); err != nil {
		t.Fatalf("%s: json: %v", typ, err)
	}
	if !reflect.DeepEqual(a.Elem().Interface(), b.Elem().Interface()) {
		t.Fatalf("%s decodes differently:\nmsgpack %+v\njson    %+v", typ, a.Elem().Interface(), b.Elem().Interface())
	}
	if len(mp) > len(js) {
		t.Errorf("%s: msgpack body %d bytes, json %d", typ, len(mp), len(js))
	}
}

// TestAuditRingKeepsTheNewest applies more than twice the ring: the recent
// entries are always the newest auditRingSize, oldest first, consecutive.
func TestAuditRingKeepsTheNewest(t *testing.T) {
	h := newHarness(t)
	seed(h)
	for i := 0; i < 2*auditRingSize+37; i++ {
		h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: fmt.Sprintf("t%d", i%7), HomeRegion: "us-east"}, At: int64(i)})
		if i%97 != 0 && i < 2*auditRingSize+30 {
			continue
		}
		h.f.Read(func(s *State) {
			recent := s.RecentAudit()
			want := min(int(s.Index), auditRingSize)
			if len(recent) != want {
				t.Fatalf("after index %d: %d recent entries, want %d", s.Index, len(recent), want)
			}
			for j, e := range recent {
				if e.Index != s.Index-uint64(len(recent)-1-j) {
					t.Fatalf("after index %d: entry %d has index %d", s.Index, j, e.Index)
				}
			}
			if recent[len(recent)-1].Hash != s.AuditHead {
				t.Fatal("the newest recent entry is not the head")
			}
		})
	}
}

// TestReplicatedTenantsIndex: the derived index of tenants with tables
// follows upserts and deletes, and is rebuilt by a restore.
func TestReplicatedTenantsIndex(t *testing.T) {
	h := newHarness(t)
	seed(h) // acme has tables
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "plain", HomeRegion: "us-east"}, At: 1})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "later", HomeRegion: "us-east"}, At: 2})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "later", HomeRegion: "us-east", Tables: []TenantTable{{Name: "t"}}}, At: 3})
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east"}, At: 4}) // tables dropped
	h.mustApply(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "gone", HomeRegion: "us-east", Tables: []TenantTable{{Name: "t"}}}, At: 5})
	h.mustApply(TenantDeleteType, TenantDelete{ID: "gone", At: 6})
	want := []string{"later"}
	ids := func(s *State) []string {
		var out []string
		for id, tn := range s.ReplicatedTenants() {
			if s.Tenants[id] != tn {
				t.Fatalf("index holds a stale tenant %s", id)
			}
			out = append(out, id)
		}
		sort.Strings(out)
		return out
	}
	h.f.Read(func(s *State) {
		if got := ids(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("replicated tenants %v, want %v", got, want)
		}
	})
	restored := New(nil, nil)
	if err := restored.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, h.f)))); err != nil {
		t.Fatal(err)
	}
	restored.Read(func(s *State) {
		if got := ids(s); !reflect.DeepEqual(got, want) {
			t.Fatalf("after restore: replicated tenants %v, want %v", got, want)
		}
	})
}
