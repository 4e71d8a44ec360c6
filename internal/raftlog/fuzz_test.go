package raftlog

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// FuzzDecodeRecord: any bytes either fail to decode or are exactly the
// encoding of the entry they decode to.
func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, entry(1, 1)))
	l := entry(7, 3)
	l.Extensions = []byte("x")
	f.Add(appendRecord(nil, l))
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got raft.Log
		if err := decodeRecord(b, &got); err != nil {
			return
		}
		if again := appendRecord(nil, &got); !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v re-encodes to %x, was %x", got, again, b)
		}
	})
}

// FuzzOpenSegment: whatever bytes follow two good records in the newest
// segment, the store opens with a consistent log that appends continue.
func FuzzOpenSegment(f *testing.F) {
	f.Add([]byte{})
	f.Add(appendRecord(nil, entry(3, 1)))
	f.Add(appendRecord(nil, entry(3, 1))[:20])
	f.Add(append(appendRecord(nil, entry(3, 1)), 0, 0, 0, 9))
	f.Fuzz(func(t *testing.T, tail []byte) {
		dir := t.TempDir()
		b := appendRecord(appendRecord(nil, entry(1, 1)), entry(2, 1))
		if err := os.WriteFile(filepath.Join(dir, segName(1)), append(b, tail...), 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := Open(dir, Options{})
		if err != nil {
			return // refused as corrupt: fine, it did not guess
		}
		defer s.Close()
		last, _ := s.LastIndex()
		if first, _ := s.FirstIndex(); first != 1 || last < 2 {
			t.Fatalf("first/last %d/%d", first, last)
		}
		var l raft.Log
		for i := uint64(1); i <= last; i++ {
			if err := s.GetLog(i, &l); err != nil {
				t.Fatalf("get %d: %v", i, err)
			}
		}
		if err := s.StoreLog(entry(last+1, 2)); err != nil {
			t.Fatalf("append after open: %v", err)
		}
		if err := s.GetLog(last+1, &l); err != nil || l.Term != 2 {
			t.Fatalf("get appended: %+v %v", l, err)
		}
	})
}
