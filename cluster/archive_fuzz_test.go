package cluster

import (
	"bytes"
	"errors"
	"strconv"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
)

func validArchive(t testing.TB) []byte {
	f := fsm.New(nil, nil)
	data, _ := fsm.Encode(fsm.RegionUpsertType, fsm.RegionUpsert{Region: fsm.Region{Name: "us-east", URL: "https://u"}})
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
	var state bytes.Buffer
	f.Read(func(s *fsm.State) { _ = fsm.WriteSnapshot(&state, s) })
	meta := []byte(`{"version":1,"raft":{"Version":1,"ID":"x","Index":1,"Term":1,"Size":` +
		strconv.Itoa(state.Len()) + `},"node":"s1","region":"r","audit_head":"","state_index":1}`)
	var out bytes.Buffer
	if err := writeArchive(&out, meta, state.Bytes()); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestReadArchiveAcceptsValidArchive(t *testing.T) {
	meta, state, err := ReadArchive(bytes.NewReader(validArchive(t)))
	if err != nil {
		t.Fatalf("valid archive refused: %v", err)
	}
	if meta.Node != "s1" || meta.Size != int64(len(state)) {
		t.Fatalf("meta %+v", meta)
	}
}

// FuzzReadArchive feeds arbitrary bytes to the snapshot archive reader: it
// must never panic, every refusal must be ErrBadSnapshot, and anything it
// accepts must hold a decodable FSM snapshot.
func FuzzReadArchive(f *testing.F) {
	good := validArchive(f)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte("not gzip"))
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)-20] ^= 0xff
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, data []byte) {
		_, state, err := ReadArchive(bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("refusal %v is not ErrBadSnapshot", err)
			}
			return
		}
		if _, err := fsm.ReadSnapshot(bytes.NewReader(state)); err != nil {
			t.Fatalf("accepted archive holds an undecodable state: %v", err)
		}
	})
}
