package client

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestClientDeclaresNoWireTypes: the client decodes and encodes the types
// of httpapi/wire, internal/structs and fsm, the same ones the server
// uses, and declares no JSON type of its own, named or anonymous: a copy
// is how client.RegionView came to lack the database the server sent.
func TestClientDeclaresNoWireTypes(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		ast.Inspect(f, func(n ast.Node) bool {
			st, ok := n.(*ast.StructType)
			if !ok {
				return true
			}
			for _, field := range st.Fields.List {
				if field.Tag == nil {
					continue
				}
				if _, ok := reflect.StructTag(strings.Trim(field.Tag.Value, "`")).Lookup("json"); ok {
					t.Errorf("%s: a struct with JSON tags: decode into a type of httpapi/wire (add it there, for the server to use too)", fset.Position(field.Pos()))
				}
			}
			return true
		})
	}
	if checked == 0 {
		wd, _ := os.Getwd()
		t.Fatalf("no Go files found in %s", wd)
	}
}

// TestStrictDecoding: a strict client refuses an answer with a field its
// type lacks (that is how the tests notice a server and client that have
// drifted apart); a default client ignores it, as an older client talking
// to a newer server must.
func TestStrictDecoding(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id":"s1","address":"127.0.0.1:1","http":"","added_later":true}`))
	}))
	defer srv.Close()
	ctx := context.Background()
	lax, _ := New(srv.URL)
	if l, err := lax.Leader(ctx); err != nil || l.ID != "s1" {
		t.Fatalf("default client: %+v, %v; want the answer with the unknown field ignored", l, err)
	}
	strict, _ := New(srv.URL, WithStrictDecoding())
	if _, err := strict.Leader(ctx); err == nil || !strings.Contains(err.Error(), "added_later") {
		t.Fatalf("strict client: %v, want an error naming the unknown field", err)
	}
}
