package fsm

import (
	"encoding/binary"
	"fmt"
)

// batchCodec is the layout of a batch body: uvarint count, then per
// command uvarint length and the encoded command (type, codec, body).
const batchCodec byte = 1

// MaxBatchCommands bounds the commands in one batch entry.
const MaxBatchCommands = 256

// batchable are the commands a batch may carry: frequent writes of one
// object each. Anything else (plans, trust, approvals) goes in an entry of
// its own.
var batchable = map[MessageType]bool{
	TenantUpsertType: true,
	TenantDeleteType: true,
	AgentReportType:  true,
}

// BatchKey returns the object a command writes, for batching, or "" when
// the command must have an entry of its own.
func BatchKey(t MessageType, body any) string {
	switch c := body.(type) {
	case TenantUpsert:
		return "tenant/" + c.Tenant.ID
	case *TenantUpsert:
		return "tenant/" + c.Tenant.ID
	case TenantDelete:
		return "tenant/" + c.ID
	case *TenantDelete:
		return "tenant/" + c.ID
	case AgentReport:
		return "agent/" + c.Node
	case *AgentReport:
		return "agent/" + c.Node
	}
	return ""
}

// EncodeBatch builds a batch entry from encoded commands.
func EncodeBatch(cmds [][]byte) []byte {
	n := 2 + binary.MaxVarintLen64
	for _, c := range cmds {
		n += binary.MaxVarintLen64 + len(c)
	}
	out := make([]byte, 0, n)
	out = append(out, byte(BatchType), batchCodec)
	out = binary.AppendUvarint(out, uint64(len(cmds)))
	for _, c := range cmds {
		out = binary.AppendUvarint(out, uint64(len(c)))
		out = append(out, c...)
	}
	return out
}

// decodeBatch splits a batch body into its commands.
func decodeBatch(v byte, body []byte) ([][]byte, error) {
	if v != batchCodec {
		return nil, fmt.Errorf("unknown batch codec %d", v)
	}
	count, n := binary.Uvarint(body)
	if n <= 0 || count == 0 || count > MaxBatchCommands {
		return nil, fmt.Errorf("bad batch count")
	}
	body = body[n:]
	cmds := make([][]byte, 0, count)
	for i := uint64(0); i < count; i++ {
		l, n := binary.Uvarint(body)
		if n <= 0 || l < 2 || l > uint64(len(body)-n) {
			return nil, fmt.Errorf("bad length of command %d", i)
		}
		c := body[n : n+int(l)]
		if !batchable[MessageType(c[0])] {
			return nil, fmt.Errorf("command %d is a %s, which a batch cannot carry", i, MessageType(c[0]))
		}
		cmds = append(cmds, c)
		body = body[n+int(l):]
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%d bytes after the last command", len(body))
	}
	return cmds, nil
}

// BatchResult is the FSM's answer to a batch entry: one result per
// command, in order.
type BatchResult struct {
	Results []*ApplyResult
}

// applyBatchEntry applies the commands of a batch entry with f.mu held. A
// batch that does not decode is refused whole, the same way on every
// server (see applyOne): the answer is then that refusal, not a
// BatchResult.
func (f *FSM) applyBatchEntry(index, term uint64, data []byte) any {
	cmds, err := decodeBatch(data[1], data[2:])
	if err != nil {
		return f.refuse(index, data, fmt.Errorf("batch: %w", err))
	}
	out := &BatchResult{Results: make([]*ApplyResult, len(cmds))}
	for i, c := range cmds {
		out.Results[i] = f.applyOne(index, term, c)
	}
	return out
}

// BatchCommands returns the encoded commands (type byte first) a batch
// entry carries, for readers of the log such as the audit endpoint.
func BatchCommands(data []byte) ([][]byte, error) {
	if len(data) < 2 || MessageType(data[0]) != BatchType {
		return nil, fmt.Errorf("not a batch entry")
	}
	return decodeBatch(data[1], data[2:])
}

// BatchLen returns how many commands a batch entry (type byte included)
// carries, for tools and tests that read the log.
func BatchLen(data []byte) (int, error) {
	if len(data) < 2 || MessageType(data[0]) != BatchType {
		return 0, fmt.Errorf("not a batch entry")
	}
	cmds, err := decodeBatch(data[1], data[2:])
	return len(cmds), err
}
