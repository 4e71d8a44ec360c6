package cluster

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// Snapshot archives are gzip'd tar files with three members: meta.json (the
// raft snapshot metadata plus who took it), state.bin (the FSM snapshot) and
// SHA256SUMS over both, checked before anything is restored.
const (
	archiveMeta  = "meta.json"
	archiveState = "state.bin"
	archiveSums  = "SHA256SUMS"
	// MaxSnapshotSize bounds an uploaded archive's decompressed members.
	MaxSnapshotSize = structs.MaxSnapshotSize
	restoreTimeout  = 2 * time.Minute
	// archiveSlack is how much padding after the tar end-of-archive blocks
	// an archive may carry (tar tools pad to 10 KiB records).
	archiveSlack = 64 << 10
)

// ErrBadSnapshot marks an archive that cannot be restored; nothing changed.
var ErrBadSnapshot = structs.ErrBadSnapshot

// archiveMetaDoc is the metadata stored in a snapshot archive.
type archiveMetaDoc struct {
	Version   int                `json:"version"`
	Raft      *raft.SnapshotMeta `json:"raft"`
	Node      string             `json:"node"`
	Region    string             `json:"region"`
	CreatedAt time.Time          `json:"created_at"`
	AuditHead string             `json:"audit_head"`
	Index     uint64             `json:"state_index"`
}

func (am *archiveMetaDoc) summary() *structs.ArchiveMeta {
	return &structs.ArchiveMeta{Version: am.Version, Node: am.Node, Region: am.Region, CreatedAt: am.CreatedAt,
		AuditHead: am.AuditHead, Index: am.Index, RaftIndex: am.Raft.Index, RaftTerm: am.Raft.Term, Size: am.Raft.Size}
}

// SaveSnapshot takes a fresh snapshot and writes it to w as an archive. It
// returns the archive's metadata.
func (s *Server) SaveSnapshot(w io.Writer) (*structs.ArchiveMeta, error) {
	if err := s.raft.Barrier(barrierTimeout).Error(); err != nil {
		return nil, classifyApplyError(err)
	}
	meta, rc, err := s.openSnapshot()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	state, err := io.ReadAll(io.LimitReader(rc, MaxSnapshotSize+1))
	if err != nil {
		return nil, fmt.Errorf("read snapshot: %w", err)
	}
	st, err := fsm.ReadSnapshot(bytes.NewReader(state))
	if err != nil {
		return nil, fmt.Errorf("snapshot does not decode: %w", err)
	}
	meta.Size = int64(len(state))
	am := &archiveMetaDoc{Version: 1, Raft: meta, Node: s.cfg.NodeID, Region: s.cfg.Region,
		CreatedAt: time.Now().UTC(), AuditHead: st.AuditHead, Index: st.Index}
	metaJSON, err := json.MarshalIndent(am, "", "  ")
	if err != nil {
		return nil, err
	}
	sum := am.summary()
	sum.Digest = sha(state)
	return sum, writeArchive(w, metaJSON, state)
}

// openSnapshot forces a snapshot, falling back to the newest stored one
// when nothing was applied since it was taken.
func (s *Server) openSnapshot() (*raft.SnapshotMeta, io.ReadCloser, error) {
	f := s.raft.Snapshot()
	err := f.Error()
	if err == nil {
		return f.Open()
	}
	if !errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil, nil, fmt.Errorf("take snapshot: %w", err)
	}
	list, lerr := s.snapshots.List()
	if lerr != nil || len(list) == 0 {
		return nil, nil, fmt.Errorf("take snapshot: %w", err)
	}
	return s.snapshots.Open(list[0].ID)
}

func writeArchive(w io.Writer, metaJSON, state []byte) error {
	gz := gzip.NewWriter(w)
	tw := tar.NewWriter(gz)
	sums := fmt.Sprintf("%s  %s\n%s  %s\n", sha(metaJSON), archiveMeta, sha(state), archiveState)
	now := time.Now()
	for _, f := range []struct {
		name string
		data []byte
	}{{archiveMeta, metaJSON}, {archiveState, state}, {archiveSums, []byte(sums)}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(len(f.data)), ModTime: now}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return gz.Close()
}

func sha(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// ReadArchive reads and verifies a snapshot archive: every member's checksum
// and the FSM payload's validity. Nothing is restored.
func ReadArchive(r io.Reader) (*structs.ArchiveMeta, []byte, error) {
	am, state, err := readArchive(r)
	if err != nil {
		return nil, nil, err
	}
	return am.summary(), state, nil
}

func readArchive(r io.Reader) (*archiveMetaDoc, []byte, error) {
	gz, err := gzip.NewReader(bufio.NewReader(r))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: not gzip: %v", ErrBadSnapshot, err)
	}
	tr := tar.NewReader(gz)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: tar: %v", ErrBadSnapshot, err)
		}
		if h.Name != archiveMeta && h.Name != archiveState && h.Name != archiveSums {
			return nil, nil, fmt.Errorf("%w: unexpected member %q", ErrBadSnapshot, h.Name)
		}
		if h.Size > MaxSnapshotSize {
			return nil, nil, fmt.Errorf("%w: member %q is larger than %d bytes", ErrBadSnapshot, h.Name, MaxSnapshotSize)
		}
		b, err := io.ReadAll(io.LimitReader(tr, MaxSnapshotSize))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: read %q: %v", ErrBadSnapshot, h.Name, err)
		}
		files[h.Name] = b
	}
	// tar stops at its end-of-archive blocks, before gzip has checked its
	// CRC and length: read the stream to its end (bounded, in case of a
	// bomb) so that a damaged trailer or trailing garbage is refused.
	if n, err := io.Copy(io.Discard, io.LimitReader(gz, archiveSlack+1)); err != nil {
		return nil, nil, fmt.Errorf("%w: gzip: %v", ErrBadSnapshot, err)
	} else if n > archiveSlack {
		return nil, nil, fmt.Errorf("%w: more than %d bytes after the tar archive", ErrBadSnapshot, archiveSlack)
	}
	for _, n := range []string{archiveMeta, archiveState, archiveSums} {
		if _, ok := files[n]; !ok {
			return nil, nil, fmt.Errorf("%w: missing %s", ErrBadSnapshot, n)
		}
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(files[archiveSums])), "\n") {
		parts := strings.Fields(line)
		if len(parts) != 2 {
			return nil, nil, fmt.Errorf("%w: malformed SHA256SUMS line %q", ErrBadSnapshot, line)
		}
		want[parts[1]] = parts[0]
	}
	for _, n := range []string{archiveMeta, archiveState} {
		if want[n] != sha(files[n]) {
			return nil, nil, fmt.Errorf("%w: checksum mismatch for %s", ErrBadSnapshot, n)
		}
	}
	var am archiveMetaDoc
	if err := json.Unmarshal(files[archiveMeta], &am); err != nil || am.Raft == nil {
		return nil, nil, fmt.Errorf("%w: meta.json: %v", ErrBadSnapshot, err)
	}
	if am.Version != 1 {
		return nil, nil, fmt.Errorf("%w: archive version %d is not supported", ErrBadSnapshot, am.Version)
	}
	state := files[archiveState]
	if am.Raft.Size != int64(len(state)) {
		return nil, nil, fmt.Errorf("%w: state is %d bytes, meta says %d", ErrBadSnapshot, len(state), am.Raft.Size)
	}
	if _, err := fsm.ReadSnapshot(bytes.NewReader(state)); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return &am, state, nil
}

// RestoreSnapshot verifies an archive and restores it into the cluster. It
// must run on the leader; every server ends with the state
// fsm.PrepareRestore builds from the archive and the live state: the
// archive's data, the live trust, nonces and audit chain, extended by an
// entry that records the restore. Once the trust is sealed, the archive's
// digest must have been approved (an applied snapshot.restore approval);
// otherwise it returns the archive's metadata and
// structs.ErrRestoreNeedsApproval, and changes nothing. by is the
// requesting token's accessor, for the audit.
func (s *Server) RestoreSnapshot(r io.Reader, by string) (*structs.ArchiveMeta, error) {
	am, state, err := readArchive(r)
	if err != nil {
		return nil, err
	}
	if !s.IsLeader() {
		return nil, ErrNotLeader
	}
	sum := am.summary()
	sum.Digest = sha(state)
	// Not approved: answered without holding writes back.
	var approved bool
	now := time.Now().UnixNano()
	s.fsm.Read(func(cur *fsm.State) { approved = !cur.TrustSealed() || cur.RestoreGrantFor(sum.Digest, now) != nil })
	if !approved {
		return sum, structs.ErrRestoreNeedsApproval
	}
	// One restore at a time: a grant is used once.
	s.restoreMu.Lock()
	defer s.restoreMu.Unlock()
	prepared, err := s.install(state, am.Raft, sum, by)
	if errors.Is(err, structs.ErrRestoreNeedsApproval) {
		return sum, err
	}
	if err != nil {
		return nil, err
	}
	s.logger.Info("restored snapshot", "from_node", am.Node, "audit_head", am.AuditHead, "digest", sum.Digest, "size", len(prepared))
	s.waitRefenced(restoreTimeout)
	return sum, nil
}

// install builds the state to install from the archive's state and the
// live one (fsm.PrepareRestore) and restores it, with new writes held back
// from the read to the install (applyGate) and everything logged before
// applied first (a barrier): no write is applied in between and lost.
func (s *Server) install(state []byte, raftMeta *raft.SnapshotMeta, sum *structs.ArchiveMeta, by string) ([]byte, error) {
	s.applyGate.Lock()
	defer s.applyGate.Unlock()
	if err := s.raft.Barrier(barrierTimeout).Error(); err != nil {
		return nil, classifyApplyError(err)
	}
	// Restored into a running federation, the snapshot's tasks carry the
	// generations of the day it was saved: marked, the leader's scheduler
	// gives them new ones before it places anything. Replication set up
	// since the save is carried over as teardowns (fsm.MarkRestored).
	var prepared []byte
	var err error
	s.fsm.Read(func(cur *fsm.State) {
		rec := fsm.RestoreRecord{Digest: sum.Digest, RequestedBy: by, At: time.Now().UnixNano()}
		if cur.TrustSealed() {
			g := cur.RestoreGrantFor(sum.Digest, rec.At)
			if g == nil {
				err = structs.ErrRestoreNeedsApproval
				return
			}
			rec.Approval, rec.Approvers = g.Approval, g.Approvers
		}
		prepared, err = fsm.PrepareRestore(state, cur, rec)
		if err != nil {
			err = fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
	})
	if err != nil {
		return nil, err
	}
	meta := *raftMeta
	meta.Size = int64(len(prepared))
	if err := s.raft.Restore(&meta, bytes.NewReader(prepared), restoreTimeout); err != nil {
		return nil, classifyApplyError(err)
	}
	return prepared, nil
}

// waitRefenced waits (up to timeout) until the scheduler has refenced the
// tasks of a restored snapshot, so that the restore's caller sees tasks
// agents will take. A leader lost meanwhile leaves it to the next one.
func (s *Server) waitRefenced(timeout time.Duration) {
	deadline := time.After(timeout)
	for {
		watch := s.fsm.WatchCh()
		var pending bool
		s.fsm.Read(func(st *fsm.State) { pending = st.RefencePending })
		if !pending {
			return
		}
		select {
		case <-watch:
		case <-deadline:
			s.logger.Warn("restored snapshot: tasks not refenced yet; the leader's scheduler will")
			return
		case <-s.shutdownCtx.Done():
			return
		}
	}
}
