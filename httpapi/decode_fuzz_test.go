package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/signing"
)

// requireBadRequest fails unless err maps to a 400 with a code and message.
func requireBadRequest(t *testing.T, err error) {
	t.Helper()
	status, code := statusFor(err)
	if status != http.StatusBadRequest || code == "" || err.Error() == "" {
		t.Fatalf("decode error maps to %d %q (%v), want a 400 with a code and message", status, code, err)
	}
}

func applyCmd(t *testing.T, f *fsm.FSM, index uint64, typ fsm.MessageType, body any) *fsm.ApplyResult {
	t.Helper()
	data, err := fsm.Encode(typ, body)
	if err != nil {
		t.Fatalf("a validated request does not encode: %v", err)
	}
	res, _ := f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data}).(*fsm.ApplyResult)
	if res == nil {
		t.Fatal("no apply result")
	}
	return res
}

// fuzzKeys are throwaway region keys: every fuzz run starts from an empty
// state, so a run's n-th region can always use the n-th key.
var fuzzKeys = func() []*signing.Signer {
	out := make([]*signing.Signer, fsm.MaxMirrors+1)
	for i := range out {
		out[i], _ = signing.NewSigner()
	}
	return out
}()

// newFuzzFSM returns an FSM whose policy gates nothing (so a production
// region is applied directly), at index 1.
func newFuzzFSM(t *testing.T) *fsm.FSM {
	f := fsm.New(nil, nil)
	if res := applyCmd(t, f, 1, fsm.PolicySetType, fsm.PolicySet{Policy: fsm.Policy{SkewSeconds: 300}}); res.Err != nil {
		t.Fatal(res.Err)
	}
	return f
}

// signedRegion is the first registration of a region signed by the k-th
// throwaway key, at raft index at.
func signedRegion(t *testing.T, r fsm.Region, k int, at int64) fsm.RegionUpsert {
	key := fuzzKeys[k]
	sig, err := key.Sign([]byte(r.Name))
	if err != nil {
		t.Fatal(err)
	}
	return fsm.RegionUpsert{Region: r, At: at, PublicKey: string(key.PublicPEM),
		Auth: &fsm.SignedAuth{KeyID: key.KeyID, Signature: sig, Body: []byte(r.Name), Nonce: fmt.Sprintf("nonce-%016d", at), Timestamp: at}}
}

// FuzzDecodeRegion runs the region registration decoder on arbitrary
// bodies: a failure is always a 400 with a code, and a body that passes
// decoding and validation is always applied and stored as sent.
func FuzzDecodeRegion(f *testing.F) {
	f.Add([]byte(`{"name":"us-east","url":"https://us-east.example.com","tier":"production","location":{"lat":1,"lon":2},"labels":{"a":"b"}}`))
	f.Add([]byte(`{"name":"x","url":"http://h"} trailing`))
	f.Add([]byte(`{"name":"x","bogus":1}`))
	f.Add([]byte(`{"location":{"lat":"north"}}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var r fsm.Region
		if err := decodeStrict(body, &r); err != nil {
			requireBadRequest(t, err)
			return
		}
		fsm.NormalizeRegion(&r)
		if err := fsm.ValidateRegion(&r); err != nil {
			if !errors.Is(err, fsm.ErrInvalid) {
				t.Fatalf("validation error %v is not ErrInvalid", err)
			}
			requireBadRequest(t, err)
			return
		}
		f := newFuzzFSM(t)
		res := applyCmd(t, f, 2, fsm.RegionUpsertType, signedRegion(t, r, 0, 1))
		if res.Err != nil {
			t.Fatalf("a validated region was rejected: %v", res.Err)
		}
		got := *res.Value.(*fsm.Region)
		r.CreateIndex, r.ModifyIndex, r.CreatedAt, r.UpdatedAt = 2, 2, 1, 1
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("stored %+v, sent %+v", got, r)
		}
	})
}

// FuzzDecodeTenant does the same for tenant bodies; the regions a valid
// tenant names are registered first, so it must then be accepted.
func FuzzDecodeTenant(f *testing.F) {
	f.Add([]byte(`{"id":"acme","home_region":"us-east","mirrors":["eu-west"],"tables":[{"name":"orders","pii_columns":["email"]}]}`))
	f.Add([]byte(`{"id":"acme","home_region":"us-east","tables":[{"name":"o","pii_columns":["tenant_id"]}]}`))
	f.Add([]byte(`{"id":"a","home_region":"r","mirrors":"r"}`))
	f.Add([]byte(`{"id":"a","labels":{"k":1}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var tn fsm.Tenant
		if err := decodeStrict(body, &tn); err != nil {
			requireBadRequest(t, err)
			return
		}
		fsm.NormalizeTenant(&tn)
		if err := fsm.ValidateTenant(&tn); err != nil {
			requireBadRequest(t, err)
			return
		}
		f := newFuzzFSM(t)
		idx := uint64(1)
		for k, name := range append([]string{tn.HomeRegion}, tn.Mirrors...) {
			idx++
			if res := applyCmd(t, f, idx, fsm.RegionUpsertType, signedRegion(t, fsm.Region{Name: name, URL: "https://r"}, k, int64(idx))); res.Err != nil {
				t.Fatalf("register %q: %v", name, res.Err)
			}
		}
		idx++
		res := applyCmd(t, f, idx, fsm.TenantUpsertType, fsm.TenantUpsert{Tenant: tn, At: 1})
		if res.Err != nil {
			t.Fatalf("a validated tenant was rejected: %v", res.Err)
		}
		if got := res.Value.(*fsm.Tenant); got.ID != tn.ID || !reflect.DeepEqual(got.Tables, tn.Tables) || !reflect.DeepEqual(got.Mirrors, tn.Mirrors) {
			t.Fatalf("stored %+v, sent %+v", got, tn)
		}
	})
}

// FuzzParseQuery checks the read parameters: no panic, a 400 on bad input,
// and sane values when accepted.
func FuzzParseQuery(f *testing.F) {
	for _, q := range []string{"consistency=stale", "index=5&wait=30s", "wait=-1s", "index=x", "consistency=strong", "stale", "wait=999h", "cas=3", "cas=-1"} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r := httptest.NewRequest(http.MethodGet, "/v1/tenants", nil)
		r.URL.RawQuery = raw
		if _, err := url.ParseQuery(raw); err != nil {
			return
		}
		o, err := parseQuery(r)
		if err != nil {
			requireBadRequest(t, err)
		} else {
			if o.consistency != Linearizable && o.consistency != Default && o.consistency != Stale {
				t.Fatalf("consistency %q accepted", o.consistency)
			}
			if o.wait < 0 || o.wait > maxBlockingWait {
				t.Fatalf("wait %s out of range", o.wait)
			}
		}
		if _, err := parseCAS(r); err != nil {
			requireBadRequest(t, err)
		}
	})
}
