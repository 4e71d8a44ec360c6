package fsm

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzReadSnapshot feeds arbitrary bytes to the snapshot decoder: it must
// never panic, and whatever it accepts must persist and decode again to the
// same bytes.
func FuzzReadSnapshot(f *testing.F) {
	h := &harness{f: New(nil, nil)}
	for _, c := range []struct {
		typ  MessageType
		body any
	}{
		{RegionUpsertType, RegionUpsert{Region: testRegion("us-east"), At: 1}},
		{TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "acme", HomeRegion: "us-east", Tables: []TenantTable{{Name: "o", PIIColumns: []string{"email"}}}}}},
	} {
		data, _ := Encode(c.typ, c.body)
		h.index++
		h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: data})
	}
	var buf bytes.Buffer
	h.f.Read(func(s *State) { _ = WriteSnapshot(&buf, s) })
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1,"audit_head":"` + GenesisHash + `"}`))
	f.Add([]byte(`{"version":1,"regions":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ReadSnapshot(bytes.NewReader(data))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteSnapshot(&out, s); err != nil {
			t.Fatalf("accepted snapshot does not persist: %v", err)
		}
		s2, err := ReadSnapshot(bytes.NewReader(out.Bytes()))
		if err != nil {
			t.Fatalf("persisted snapshot does not decode: %v", err)
		}
		var out2 bytes.Buffer
		_ = WriteSnapshot(&out2, s2)
		if !bytes.Equal(out.Bytes(), out2.Bytes()) {
			t.Fatal("snapshot is not stable across a round trip")
		}
	})
}

// FuzzApplyEncodedCommand applies well-formed entries of every command type
// with fuzzed bodies: Apply may reject them but must not panic on anything
// that decodes, and a rejection must leave the state as it was.
func FuzzApplyEncodedCommand(f *testing.F) {
	f.Add(uint8(RegionUpsertType), codecJSON, []byte(`{"region":{"name":"a","url":"https://a"},"at":1}`))
	f.Add(uint8(RegionUpsertType), codecJSON, []byte(`{"region":{"name":"a","url":"https://a","app_url":"https://app.a"},"at":1,"rules":4}`))
	f.Add(uint8(TenantUpsertType), codecJSON, []byte(`{"tenant":{"id":"t","home_region":"us-east","mirrors":["eu-west"]},"cas":0}`))
	f.Add(uint8(TenantUpsertType), codecJSON, []byte(`{"tenant":{"id":"acme","home_region":"eu-west","mirrors":["us-east"],"epoch":7},"rules":4}`))
	f.Add(uint8(TenantPatchType), codecJSON, []byte(`{"id":"acme","patch":{"home_region":"eu-west","mirrors":null},"rules":4}`))
	f.Add(uint8(TenantPatchType), codecJSON, []byte(`{"id":"acme","patch":{"epoch":0},"rules":4}`))
	f.Add(uint8(RegionDeleteType), codecJSON, []byte(`{"name":"eu-west"}`))
	f.Add(uint8(SwitchoverStartType), codecJSON, []byte(`{"tenant":"acme","to":"eu-west","timeout_ms":5000,"at":1}`))
	f.Add(uint8(SwitchoverAdvanceType), codecJSON, []byte(`{"tenant":"acme","id":9,"from":"fencing","to":"catching_up","fenced_lsn":"0/16B3748","pii":[{"table":"public.orders","column":"email","type":"text","typmod":-1}]}`))
	f.Add(uint8(SwitchoverAdvanceType), codecJSON, []byte(`{"tenant":"acme","id":9,"from":"promoting","to":"committed","slots":{"us-east":"0/2"}}`))
	f.Add(uint8(SwitchoverAbortType), codecJSON, []byte(`{"tenant":"acme","reason":"x"}`))
	f.Add(uint8(DivergenceRecordType), codecJSON, []byte(`{"tenant":"acme","tenant_created":3,"region":"us-east","epoch":2,"tables":{"public.orders":3},"missing_at_new_home":1,"at":1}`))
	f.Add(uint8(DivergenceRecordType), codecJSON, []byte(`{"tenant":"acme","region":"us-east","resolve":true,"note":"done","requested_by":"op","at":2}`))
	f.Add(uint8(FailoverStartType), codecJSON, []byte(`{"targets":[{"tenant":"acme","to":"eu-west"}],"force":true,"max_lag_ms":100}`))
	f.Add(uint8(FailoverStartType), codecJSON, []byte(`{"targets":[{"tenant":"acme"},{"tenant":"acme"}],"region":"us-east"}`))
	f.Add(uint8(FailoverStartType), codecJSON, []byte(`{"targets":[],"max_lag_ms":-1}`))
	f.Add(uint8(FailoverAutoType), codecJSON, []byte(`{"tenant":"acme","to":"eu-west","down_for_ms":3000}`))
	f.Add(uint8(FailoverHoldType), codecJSON, []byte(`{"tenant":"acme","wait":"detecting","reason":"x"}`))
	f.Add(uint8(FailoverHoldType), codecJSON, []byte(`{"tenant":"acme"}`))
	f.Add(uint8(TenantDeleteType), codecJSON, []byte(`{"id":"acme","cas":3}`))
	f.Add(uint8(AgentUpsertType), codecJSON, []byte(`{"agent":{"node":"a1","region":"us-east","status":"alive","capabilities":["probe"]}}`))
	f.Add(uint8(TaskPlanType), codecJSON, []byte(`{"create":[{"id":"probe/us-east","type":"probe","region":"us-east"}]}`))
	f.Add(uint8(AgentReportType), codecJSON, []byte(`{"node":"a1","tasks":[{"id":"x","generation":1,"status":"running"}]}`))
	f.Add(uint8(AgentLeaveType), codecJSON, []byte(`{"node":"a1"}`))
	f.Add(uint8(RegionDatabaseType), codecJSON, []byte(`{"region":"us-east","endpoint":{"host":"db","port":5432,"database":"atomfed"},"node":"a1"}`))
	f.Add(uint8(TenantSyncStateType), codecJSON, []byte(`{"tenant":"acme","state":"degraded","since":1}`))
	f.Add(uint8(GlobalTableUpsertType), codecJSON, []byte(`{"table":{"name":"public.fx","writer_region":"eu-west"},"cas":0}`))
	f.Add(uint8(GlobalTableDeleteType), codecJSON, []byte(`{"name":"public.fx"}`))
	f.Add(uint8(BackupPolicySetType), codecJSON, []byte(`{"policy":{"region":"us-east","full_every_seconds":3600,"incr_every_seconds":60,"retention_full":2,"max_age_seconds":600,"repository":{"kind":"posix","path":"/b"}}}`))
	f.Add(uint8(DrillRequestType), codecJSON, []byte(`{"region":"us-east","reason":"manual"}`))
	f.Add(uint8(RebuildRequestType), codecJSON, []byte(`{"region":"us-east","target_time":1700000000000000000,"backup":"us-east-7","force":true,"at":1800000000000000000}`))
	f.Add(uint8(RebuildRecordType), codecJSON, []byte(`{"rebuild":"us-east-r9","region":"us-east","generation":9,"agent":"a1","result":{"phase":"done","bytes":10,"files":2,"timeline":2}}`))
	f.Add(uint8(DrillRecordType), codecJSON, []byte(`{"drill":"us-east-d9","region":"us-east","generation":9,"agent":"a1","result":{"verdict":"passed","tables_read":1,"tables":[{"database":"atomfed","name":"public.t","rows":3,"checksum":"12"}]}}`))
	f.Add(uint8(BackupRequestType), codecJSON, []byte(`{"region":"us-east","type":"full","reason":"manual"}`))
	f.Add(uint8(BackupRecordType), codecJSON, []byte(`{"backup":"us-east-5","region":"us-east","generation":5,"agent":"a1","result":{"label":"x","verified":true,"in_repo":["x"]}}`))
	f.Add(uint8(PolicySetType), codecJSON, []byte(`{"policy":{"rules":{"failover":{"required":1,"ttl_seconds":600}},"skew_seconds":60}}`))
	f.Add(uint8(ApprovalVoteType), codecJSON, []byte(`{"id":"appr-0001","auth":{"key_id":"x","signature":"AAAA","body":"e30=","nonce":"abcdefgh"}}`))
	f.Add(uint8(TokenCreateType), codecJSON, []byte(`{"token":{"accessor":"00112233445566778899aabbccddeeff","secret_hash":"`+strings.Repeat("a", 64)+`","role":"reader"}}`))
	f.Add(uint8(PolicySetType), codecJSON, []byte(`{"policy":{"rules":{"policy.set":{"required":0}},"skew_seconds":60},"rules":4}`))
	f.Add(uint8(MemberDeleteType), codecJSON, []byte(`{"id":"alice","rules":4}`))
	f.Add(uint8(BootstrapRetireType), codecJSON, []byte(`{"by":"bootstrap","at":1}`))
	f.Add(uint8(SnapshotRestoreType), codecJSON, []byte(`{"digest":"`+strings.Repeat("a", 64)+`","at":1}`))
	f.Add(uint8(ApprovalPruneType), codecJSON, []byte(`{"ids":["appr-0001"],"at":9999999999999999}`))
	f.Add(uint8(TokenCreateType), codecJSON, []byte(`{"token":{"accessor":"00112233445566778899aabbccddeeff","secret_hash":"`+strings.Repeat("a", 64)+`","role":"agent","node":"n1","region":"us-east"},"rules":4}`))
	// The same commands as servers write them.
	for _, c := range seedCommands() {
		data, err := Encode(c.typ, c.body)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data[0], data[1], data[2:])
	}
	f.Fuzz(func(t *testing.T, typ uint8, codecVersion byte, body []byte) {
		mt := MessageType(typ)
		c, ok := commands[mt]
		if !ok {
			return
		}
		// Only bodies that decode as the command's type reach Apply in a
		// real cluster; the leader encoded them.
		if decodeBody(codecVersion, body, c.body()) != nil {
			return
		}
		h := &harness{t: t, f: New(nil, nil)}
		seed(h)
		before := snapshotBytes(t, h.f)
		h.index++
		res := h.f.Apply(&raft.Log{Index: h.index, Type: raft.LogCommand, Data: append([]byte{typ, codecVersion}, body...)})
		r, _ := res.(*ApplyResult)
		if r == nil {
			t.Fatal("a registered command returned no result")
		}
		if r.Err != nil && !bytes.Equal(before, snapshotBytes(t, h.f)) {
			t.Fatalf("rejected command (%v) changed the state", r.Err)
		}
	})
}

// seedCommands are valid commands of several types, for fuzz seeds.
func seedCommands() []struct {
	typ  MessageType
	body any
} {
	return []struct {
		typ  MessageType
		body any
	}{
		{RegionUpsertType, RegionUpsert{Region: testRegion("ap-south"), At: 1}},
		{TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "t", HomeRegion: "us-east", Mirrors: []string{"eu-west"}, Labels: map[string]string{"a": "b"}}, At: 2}},
		{TenantDeleteType, TenantDelete{ID: "acme", At: 3}},
		{AgentUpsertType, AgentUpsert{Agent: Agent{Node: "a1", Region: "us-east", Status: AgentAlive, Capabilities: []string{"probe"}}}},
		{TaskPlanType, TaskPlan{Create: []TaskSpec{{ID: "probe/us-east", Type: "probe", Region: "us-east", Spec: []byte(`{"x":1}`)}}}},
		{AgentReportType, AgentReport{Node: "a1", Tasks: []TaskReport{{ID: "x", Generation: 1, Status: "running", Result: []byte(`{"ok":true}`)}}}},
		{RegionDatabaseType, RegionDatabaseReport{Region: "us-east", Node: "a1", Endpoint: DatabaseEndpoint{Host: "db", Port: 5432, Database: "atomfed"}, At: 4}},
		{GlobalTableUpsertType, GlobalTableUpsert{Table: GlobalTable{Name: "public.fx", WriterRegion: "eu-west"}, At: 5}},
		{SwitchoverStartType, SwitchoverStart{Tenant: "acme", To: "eu-west", At: 6}},
		{SwitchoverAdvanceType, SwitchoverAdvance{Tenant: "acme", ID: 7, From: PhaseFencing, To: PhaseCatchingUp, FencedLSN: "0/1", At: 7}},
		{SwitchoverAbortType, SwitchoverAbort{Tenant: "acme", At: 8}},
		{DivergenceRecordType, DivergenceRecord{Tenant: "acme", Region: "us-east", Tables: map[string]int64{"public.orders": 2}, At: 9}},
		{FailoverStartType, FailoverStart{Targets: []FailoverTarget{{Tenant: "acme", To: "eu-west"}}, Force: true, At: 9}},
		{FailoverAutoType, FailoverAutoStart{Tenant: "acme", To: "eu-west", DownForMS: 3000, At: 9}},
		{FailoverHoldType, FailoverHold{Tenant: "acme", Wait: AutoWaitDrill, Reason: "no drill", At: 9}},
	}
}

// FuzzNameValidators checks the hand-written name matchers against the
// regexps they stand for.
func FuzzNameValidators(f *testing.F) {
	for _, s := range []string{"us-east", "a", "-a", "a-", "acme_co", "A", "x.y/z", strings.Repeat("a", 63), strings.Repeat("a", 64), "", "é"} {
		f.Add(s)
	}
	dns := regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	tenant := regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$`)
	label := regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$`)
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidRegionName(s), dns.MatchString(s); got != want {
			t.Fatalf("ValidRegionName(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := ValidTenantID(s), tenant.MatchString(s); got != want {
			t.Fatalf("ValidTenantID(%q) = %v, regexp says %v", s, got, want)
		}
		if got, want := validLabelKey(s), label.MatchString(s); got != want {
			t.Fatalf("validLabelKey(%q) = %v, regexp says %v", s, got, want)
		}
	})
}
