package fsm

import (
	"encoding/json"
	"fmt"
)

// MessageType identifies a command in the Raft log. Numbers are never reused;
// retired types stay reserved in this list.
type MessageType uint8

// IgnoreUnknownTypeFlag marks a command that a server which does not know it
// may skip. Commands without the flag panic on an older server, which is the
// safe choice for anything that changes state others depend on.
const IgnoreUnknownTypeFlag MessageType = 128

// Command types.
const (
	RegionUpsertType MessageType = 1
	RegionDeleteType MessageType = 2
	TenantUpsertType MessageType = 3
	TenantDeleteType MessageType = 4
)

// codecJSON is the body codec version: version 1 is a JSON object.
const codecJSON byte = 1

// String returns the command's name as it appears in audit entries.
func (t MessageType) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("unknown(%d)", uint8(t))
}

var typeNames = map[MessageType]string{
	RegionUpsertType: "region_upsert",
	RegionDeleteType: "region_delete",
	TenantUpsertType: "tenant_upsert",
	TenantDeleteType: "tenant_delete",
}

// RegionUpsert creates or replaces a region.
type RegionUpsert struct {
	Region Region  `json:"region"`
	CAS    *uint64 `json:"cas,omitempty"` // expected modify index; 0 = create only
	At     int64   `json:"at"`            // leader's clock, unix nanoseconds
}

// RegionDelete removes a region that no tenant uses.
type RegionDelete struct {
	Name string  `json:"name"`
	CAS  *uint64 `json:"cas,omitempty"`
	At   int64   `json:"at"`
}

// TenantUpsert creates or replaces a tenant's placement.
type TenantUpsert struct {
	Tenant Tenant  `json:"tenant"`
	CAS    *uint64 `json:"cas,omitempty"`
	At     int64   `json:"at"`
}

// TenantDelete removes a tenant.
type TenantDelete struct {
	ID  string  `json:"id"`
	CAS *uint64 `json:"cas,omitempty"`
	At  int64   `json:"at"`
}

// Encode builds a log entry: the type byte, the codec version byte, then the
// JSON body.
func Encode(t MessageType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	out := make([]byte, 0, len(b)+2)
	out = append(out, byte(t), codecJSON)
	return append(out, b...), nil
}

// decodeBody parses a command body of codec version v into out.
func decodeBody(v byte, body []byte, out any) error {
	if v != codecJSON {
		return fmt.Errorf("unknown codec version %d", v)
	}
	return json.Unmarshal(body, out)
}
