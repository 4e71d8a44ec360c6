package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// A record is one raft log entry in a segment file:
//
//	u32 length of the body
//	u32 CRC-32C of the length bytes and the body
//	body: u64 index, u64 term, u8 type, i64 appended-at (Unix ns),
//	      uvarint len(data), data, uvarint len(extensions), extensions
//
// All integers are big-endian. The CRC covers the length so that a torn or
// zero-filled tail never reads as a valid record.
const (
	headerLen = 8
	// fixedBodyLen is the body's fixed part: index, term, type, appended-at.
	fixedBodyLen = 8 + 8 + 1 + 8
	// maxRecordLen bounds one record's body. raft entries here are group
	// commits of at most 1 MiB of commands; anything much larger is a
	// corrupt length, not an entry.
	maxRecordLen = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errTorn marks bytes at the end of a segment that are not a whole, valid
// record: a write that a crash interrupted, or zeros the filesystem left.
var errTorn = errors.New("torn or incomplete record")

// appendRecord appends l's record to buf and returns the extended buffer.
func appendRecord(buf []byte, l *raft.Log) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, headerLen)...)
	buf = binary.BigEndian.AppendUint64(buf, l.Index)
	buf = binary.BigEndian.AppendUint64(buf, l.Term)
	buf = append(buf, byte(l.Type))
	var at int64
	if !l.AppendedAt.IsZero() {
		at = l.AppendedAt.UnixNano()
	}
	buf = binary.BigEndian.AppendUint64(buf, uint64(at))
	buf = binary.AppendUvarint(buf, uint64(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = binary.AppendUvarint(buf, uint64(len(l.Extensions)))
	buf = append(buf, l.Extensions...)
	bodyLen := len(buf) - start - headerLen
	binary.BigEndian.PutUint32(buf[start:], uint32(bodyLen))
	crc := crc32.Update(0, crcTable, buf[start:start+4])
	crc = crc32.Update(crc, crcTable, buf[start+headerLen:])
	binary.BigEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// recordLen reads a record header and returns the record's whole length
// (header and body). It returns errTorn when the header is incomplete or its
// length cannot be a record; the CRC is checked by decodeRecord.
func recordLen(hdr []byte) (int, error) {
	if len(hdr) < headerLen {
		return 0, errTorn
	}
	n := binary.BigEndian.Uint32(hdr)
	if n < fixedBodyLen+2 || n > maxRecordLen {
		return 0, errTorn
	}
	return headerLen + int(n), nil
}

// decodeRecord decodes one whole record (as long as recordLen said) into l.
// The entry's Data and Extensions alias rec: both callers read the record
// into a buffer of their own (GetLog one per call, for raft to keep; Open
// the segment, only to check it), so a copy would be work done twice.
func decodeRecord(rec []byte, l *raft.Log) error {
	n, err := recordLen(rec)
	if err != nil {
		return err
	}
	if len(rec) != n {
		return errTorn
	}
	crc := crc32.Update(0, crcTable, rec[:4])
	crc = crc32.Update(crc, crcTable, rec[headerLen:])
	if crc != binary.BigEndian.Uint32(rec[4:]) {
		return errTorn
	}
	body := rec[headerLen:]
	l.Index = binary.BigEndian.Uint64(body)
	l.Term = binary.BigEndian.Uint64(body[8:])
	l.Type = raft.LogType(body[16])
	if at := int64(binary.BigEndian.Uint64(body[17:])); at != 0 {
		l.AppendedAt = time.Unix(0, at)
	} else {
		l.AppendedAt = time.Time{}
	}
	rest := body[fixedBodyLen:]
	data, rest, err := readBytes(rest)
	if err != nil {
		return err
	}
	ext, rest, err := readBytes(rest)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		// The CRC matched, so the writer produced this: a bug, not a tear.
		return fmt.Errorf("record for index %d has %d unexpected trailing bytes", l.Index, len(rest))
	}
	l.Data, l.Extensions = data, ext
	return nil
}

// readBytes reads a uvarint-prefixed byte string and returns it (nil when
// empty, capacity capped at its length) and the rest.
func readBytes(b []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, fmt.Errorf("record has a bad length prefix")
	}
	b = b[k:]
	if n == 0 {
		return nil, b, nil
	}
	return b[:n:n], b[n:], nil
}
