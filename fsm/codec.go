package fsm

import (
	"encoding/json"
	"fmt"

	"github.com/hashicorp/go-msgpack/v2/codec"
)

// Body codec versions. Commands are written as MessagePack (smaller, and
// three times faster to decode than JSON, which every server does for
// every entry); JSON bodies from older logs still apply, and approvals
// keep their embedded command as JSON so that the API can show it.
const (
	CodecJSON    byte = 1
	CodecMsgpack byte = 2

	codecJSON    = CodecJSON
	codecMsgpack = CodecMsgpack
)

// msgpackHandle encodes with the json field names, byte slices as binary,
// and map keys sorted, so that the same command always encodes the same.
var msgpackHandle = func() *codec.MsgpackHandle {
	h := &codec.MsgpackHandle{WriteExt: true}
	h.Canonical = true
	h.ErrorIfNoField = false
	return h
}()

// Encode builds a log entry: the type byte, the codec version byte, then
// the MessagePack body.
func Encode(t MessageType, body any) ([]byte, error) {
	return EncodeWith(CodecMsgpack, t, body)
}

// EncodeWith builds a log entry with the given body codec: CodecJSON while
// some server of the cluster is too old to read CodecMsgpack.
func EncodeWith(codecVersion byte, t MessageType, body any) ([]byte, error) {
	if codecVersion == CodecJSON {
		return EncodeJSON(t, body)
	}
	var b []byte
	if err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(body); err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	out := make([]byte, 0, len(b)+2)
	out = append(out, byte(t), CodecMsgpack)
	return append(out, b...), nil
}

// EncodeJSON is Encode with a JSON body, for commands embedded where people
// read them (an approval's command).
func EncodeJSON(t MessageType, body any) ([]byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", t, err)
	}
	out := make([]byte, 0, len(b)+2)
	out = append(out, byte(t), codecJSON)
	return append(out, b...), nil
}

// MarshalResult encodes an apply's result value for the trip from the
// leader to the follower that forwarded the command (MessagePack).
func MarshalResult(v any) ([]byte, error) {
	var b []byte
	err := codec.NewEncoderBytes(&b, msgpackHandle).Encode(v)
	return b, err
}

// UnmarshalResult decodes what MarshalResult encoded into v (a pointer
// from ResultValue).
func UnmarshalResult(data []byte, v any) error {
	return codec.NewDecoderBytes(data, msgpackHandle).Decode(v)
}

// decodeBody parses a command body of codec version v into out.
func decodeBody(v byte, body []byte, out any) error {
	switch v {
	case codecMsgpack:
		return codec.NewDecoderBytes(body, msgpackHandle).Decode(out)
	case codecJSON:
		return json.Unmarshal(body, out)
	}
	return fmt.Errorf("unknown codec version %d", v)
}
