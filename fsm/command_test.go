package fsm

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// catalogueConst is a MessageType constant as declared in the source.
type catalogueConst struct {
	name string
	typ  MessageType
	file string
}

// messageTypeConsts parses the package's non-test files and returns every
// constant declared with type MessageType, except IgnoreUnknownTypeFlag.
// Reading the source rather than a list kept by hand is what lets the
// catalogue test see a constant that someone forgot to name or declared
// outside command.go.
func messageTypeConsts(t *testing.T) []catalogueConst {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []catalogueConst
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, file, src, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			typed := false // the block declares MessageType constants
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				id, _ := vs.Type.(*ast.Ident)
				if id == nil || id.Name != "MessageType" {
					if typed && vs.Type == nil && len(vs.Values) == 0 {
						t.Errorf("%s: %s continues a MessageType block implicitly: write each number as a literal", file, vs.Names[0])
					}
					continue
				}
				typed = true
				for i, n := range vs.Names {
					if n.Name == "IgnoreUnknownTypeFlag" {
						continue
					}
					v, ok := commandNumber(vs.Values[i])
					if !ok {
						t.Errorf("%s: %s is not written as N or IgnoreUnknownTypeFlag | N: command numbers are written out so that they can be checked against the logs on disk", file, n.Name)
						continue
					}
					out = append(out, catalogueConst{name: n.Name, typ: v, file: file})
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatal("found no MessageType constants: is the test running in the package directory?")
	}
	return out
}

// commandNumber evaluates a command number written as an integer literal
// N or as IgnoreUnknownTypeFlag | N, the two forms command.go allows.
func commandNumber(e ast.Expr) (MessageType, bool) {
	var flag MessageType
	if b, ok := e.(*ast.BinaryExpr); ok {
		if id, ok := b.X.(*ast.Ident); !ok || id.Name != "IgnoreUnknownTypeFlag" || b.Op != token.OR {
			return 0, false
		}
		flag, e = IgnoreUnknownTypeFlag, b.Y
	}
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.INT {
		return 0, false
	}
	v, err := strconv.ParseUint(lit.Value, 0, 8)
	if err != nil {
		return 0, false
	}
	return flag | MessageType(v), true
}

func TestCommandCatalogue(t *testing.T) {
	consts := messageTypeConsts(t)
	byNumber := map[MessageType]string{}
	for _, c := range consts {
		if c.file != "command.go" {
			t.Errorf("%s is declared in %s: every command type belongs in command.go, the one catalogue", c.name, c.file)
		}
		if prev, dup := byNumber[c.typ]; dup {
			t.Errorf("%s and %s share number %d", prev, c.name, c.typ)
		}
		byNumber[c.typ] = c.name
		if _, ok := typeNames[c.typ]; !ok {
			t.Errorf("%s (%d) has no name in typeNames", c.name, c.typ)
		}
		if blocks := blocksOf(c.typ); len(blocks) != 1 {
			t.Errorf("%s (%d) lies in %d number blocks, want exactly one: %v", c.name, c.typ, len(blocks), blocks)
		}
	}
	names := map[string]MessageType{}
	for typ, name := range typeNames {
		if _, ok := byNumber[typ]; !ok {
			t.Errorf("typeNames names %d (%q), which no constant declares", typ, name)
		}
		if prev, dup := names[name]; dup {
			t.Errorf("types %d and %d are both named %q", prev, typ, name)
		}
		names[name] = typ
	}
}

// blocksOf returns the areas of the number blocks that hold t.
func blocksOf(t MessageType) []string {
	var out []string
	n := t &^ IgnoreUnknownTypeFlag
	for _, b := range typeBlocks {
		if n >= b.first && n <= b.last {
			out = append(out, b.area)
		}
	}
	return out
}

func TestTypeBlocksAreOrderedAndDisjoint(t *testing.T) {
	var prev MessageType // 0 is never a command
	for _, b := range typeBlocks {
		if b.first <= prev || b.last < b.first || b.last >= IgnoreUnknownTypeFlag {
			t.Errorf("block %d-%d (%s) overlaps the one before it, is empty or reaches the flag bit", b.first, b.last, b.area)
		}
		prev = b.last
	}
}

// TestCommandNumbersAndNamesAreStable pins every number and name: numbers
// are in raft logs and snapshots on disk and names in their audit entries,
// so changing one breaks every cluster that wrote them. A new command adds
// its line here; an existing line never changes.
func TestCommandNumbersAndNamesAreStable(t *testing.T) {
	want := map[MessageType]string{
		1: "region_upsert", 2: "region_delete", 3: "tenant_upsert", 4: "tenant_delete",
		5: "agent_upsert", 6: "agent_delete", 7: "task_plan", 8: "agent_report", 9: "agent_leave",
		10: "member_register", 11: "key_rotate", 12: "key_revoke", 13: "member_delete",
		14: "token_create", 15: "token_delete", 16: "policy_set", 17: "approval_create",
		18: "approval_vote", 19: "approval_expire", 20: "server_key_set",
		21: "bootstrap_retire", 22: "snapshot_restore", 23: "approval_prune",
		30: "region_database", 31: "tenant_sync_state", 32: "global_table_upsert", 33: "global_table_delete",
		60: "switchover_start", 61: "switchover_advance", 62: "switchover_abort", 63: "failover_start", 64: "failover_auto", 65: "failover_hold",
		67: "divergence_record",
		70: "backup_policy_set", 71: "backup_request", 72: "backup_record", 73: "drill_request", 74: "drill_record",
		77: "rebuild_request", 78: "rebuild_record",
		80: "tasks_refence", 81: "tenant_patch",
		40: "batch",
	}
	for typ, name := range want {
		if got := typ.String(); got != name {
			t.Errorf("type %d is named %q, was %q", typ, got, name)
		}
	}
	for typ := range typeNames {
		if _, ok := want[typ]; !ok {
			t.Errorf("type %d (%s) is new: add it to this list", typ, typ)
		}
	}
	if got := MessageType(79).String(); got != "unknown(79)" {
		t.Errorf("an unassigned type is named %q, want unknown(79)", got)
	}
}

// envelopes are the named types that are not in the dispatch table:
// ApplyBatch unwraps them and dispatches what they carry.
var envelopes = map[MessageType]bool{BatchType: true}

func TestEveryCommandTypeIsRegisteredAndNamed(t *testing.T) {
	for typ, name := range typeNames {
		_, registered := commands[typ]
		switch {
		case envelopes[typ] && registered:
			t.Errorf("%s (%d) is an envelope but is in the dispatch table", name, typ)
		case !envelopes[typ] && !registered:
			t.Errorf("%s (%d) has a name but no apply function", name, typ)
		}
	}
	for _, typ := range RegisteredTypes() {
		if _, ok := typeNames[typ]; !ok {
			t.Errorf("type %d is registered but has no name", typ)
		}
	}
	if len(RegisteredTypes()) != len(typeNames)-len(envelopes) {
		t.Fatalf("%d registered, %d named, %d envelopes", len(RegisteredTypes()), len(typeNames), len(envelopes))
	}
}

func TestRegisterCommandPanicsOnDuplicate(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering a type twice did not panic")
		}
	}()
	registerCommand[RegionUpsert](RegionUpsertType, applyRegionUpsert)
}

// TestDecodeCommand: what the leader accepts from a forwarding follower is
// a registered command whose body decodes; anything else is refused as
// invalid_command before it could be logged.
func TestDecodeCommand(t *testing.T) {
	good, err := Encode(TenantDeleteType, TenantDelete{ID: "acme", At: 1})
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := DecodeCommand(good)
	if err != nil || typ != TenantDeleteType || body.(*TenantDelete).ID != "acme" {
		t.Fatalf("a good command: %v %+v %v", typ, body, err)
	}
	tenant, _ := Encode(TenantUpsertType, TenantUpsert{Tenant: Tenant{ID: "x", HomeRegion: "us-east"}})
	for name, data := range map[string][]byte{
		"empty":              nil,
		"type only":          {byte(TenantDeleteType)},
		"unknown type":       {79, codecJSON, '{', '}'},
		"ignorable, unknown": {byte(IgnoreUnknownTypeFlag | 79), codecJSON, '{', '}'},
		"a batch":            EncodeBatch([][]byte{tenant}),
		"bad json":           append([]byte{byte(TenantUpsertType), codecJSON}, "{not json"...),
		"unknown codec":      append([]byte{byte(TenantUpsertType), 9}, "{}"...),
		"wrong field type":   append([]byte{byte(RegionDeleteType), codecJSON}, `{"name":5}`...),
	} {
		if _, _, err := DecodeCommand(data); codeOf(err) != "invalid_command" {
			t.Errorf("%s: %v, want invalid_command", name, err)
		}
	}
}
