package cluster

import (
	"bufio"
	"bytes"
	"errors"
	"testing"

	"github.com/atomcloud/atomfed/fsm"
)

// FuzzReadFrame feeds arbitrary bytes to the forwarding frame decoder: it
// never panics, never allocates past the frame limit, and what it accepts
// encodes back to the same bytes.
func FuzzReadFrame(f *testing.F) {
	var seed bytes.Buffer
	w := bufio.NewWriter(&seed)
	_ = writeFrame(w, 7, fwdApply, []byte("\x00\x00\x00\x00\x00\x00\x00\x01payload"))
	f.Add(seed.Bytes())
	f.Add([]byte{0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 1, fwdReadIndex})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Add([]byte{0, 0, 0, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		id, kind, payload, err := readFrame(bufio.NewReader(bytes.NewReader(in)))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := writeFrame(bufio.NewWriter(&out), id, kind, payload); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(in, out.Bytes()) {
			t.Fatalf("decoded frame (id %d kind %d, %d bytes) re-encodes differently", id, kind, len(payload))
		}
	})
}

// TestFwdErrRoundTrip checks that every error a leader can answer keeps its
// meaning on the follower: business rejections keep their kind and code,
// cluster conditions stay the same sentinel, anything else is an unknown
// outcome (never a definite failure that would invite a blind retry).
func TestFwdErrRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		in   error
		want error
	}{
		{&fsm.Error{Kind: fsm.ErrConflict, Code: "cas_mismatch", Message: "m"}, fsm.ErrConflict},
		{&fsm.Error{Kind: fsm.ErrNotFound, Code: "unknown_region", Message: "m"}, fsm.ErrNotFound},
		{&fsm.Error{Kind: fsm.ErrForbidden, Code: "bad_signature", Message: "m"}, fsm.ErrForbidden},
		{ErrNotLeader, ErrNotLeader},
		{ErrBusy, ErrBusy},
		{ErrShuttingDown, ErrShuttingDown},
		{errors.New("disk on fire"), ErrOutcomeUnknown},
	} {
		got := toFwdErr(tc.in).err()
		if !errors.Is(got, tc.want) {
			t.Errorf("%v came back as %v, want %v", tc.in, got, tc.want)
		}
		var fe *fsm.Error
		if errors.As(tc.in, &fe) {
			var ge *fsm.Error
			if !errors.As(got, &ge) || ge.Code != fe.Code {
				t.Errorf("%v lost its code: %v", tc.in, got)
			}
		}
	}
}
