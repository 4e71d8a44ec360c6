package cluster

import (
	"context"
	"encoding/base64"
	"encoding/pem"
	"time"

	"github.com/hashicorp/serf/serf"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/node"
)

const trustRoutineInterval = 2 * time.Second

// publicKeyTag encodes a PEM public key for the tag.
func publicKeyTag(pemKey []byte) string {
	b, _ := pem.Decode(pemKey)
	if b == nil {
		return ""
	}
	return base64.StdEncoding.EncodeToString(b.Bytes)
}

// tagPublicKey decodes the tag back to PEM.
func tagPublicKey(tag string) string {
	der, err := base64.StdEncoding.DecodeString(tag)
	if err != nil || len(der) == 0 {
		return ""
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
}

// serverKeysRoutine keeps a trust member of kind server for every alive
// server of the Raft configuration, with the key it gossips, so that trust
// bundles signed by any server verify against the bundle itself. A member
// merely tagged role=server (anyone with the gossip key) is not a server:
// only those the leader admitted, on a server certificate naming them, get
// a key recorded.
func (s *Server) serverKeysRoutine(ctx context.Context) error {
	tick := time.NewTicker(trustRoutineInterval)
	defer tick.Stop()
	for {
		voters := map[string]bool{}
		if f := s.raft.GetConfiguration(); f.Error() == nil {
			for _, srv := range f.Configuration().Servers {
				voters[string(srv.ID)] = true
			}
		}
		for _, m := range s.serf.Members() {
			if m.Status != serf.StatusAlive || m.Tags[node.TagRole] != node.RoleServer || m.Tags[node.TagPublicKey] == "" || !voters[m.Name] {
				continue
			}
			pub := tagPublicKey(m.Tags[node.TagPublicKey])
			var have bool
			s.fsm.Read(func(st *fsm.State) {
				mem := st.Members[m.Name]
				have = mem != nil && len(mem.Keys) == 1 && mem.Keys[0].PublicKey == pub
			})
			if have || pub == "" {
				continue
			}
			err := s.applyQuiet(ctx, fsm.ServerKeySetType, fsm.ServerKeySet{ID: m.Name, PublicKey: pub, At: time.Now().UnixNano()})
			if err != nil {
				s.logger.Warn("could not record a server key", "server", m.Name, "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// approvalExpiryRoutine marks pending approvals whose time has passed as
// expired, so that they show as such everywhere, and prunes the closed
// ones whose retention (the policy's approval_retention_seconds) has
// passed; their audit entries stay.
func (s *Server) approvalExpiryRoutine(ctx context.Context) error {
	tick := time.NewTicker(trustRoutineInterval)
	defer tick.Stop()
	for {
		now := time.Now().UnixNano()
		var ids, prune []string
		s.fsm.Read(func(st *fsm.State) {
			for _, a := range st.SortedApprovals() {
				if a.Status == fsm.ApprovalPending && a.ExpiresAt < now {
					ids = append(ids, a.ID)
				}
			}
			prune = st.PrunableApprovals(now)
		})
		if len(ids) > 0 {
			if err := s.applyQuiet(ctx, fsm.ApprovalExpireType, fsm.ApprovalExpire{IDs: ids, At: now}); err != nil {
				s.logger.Warn("could not expire approvals", "error", err)
			}
		}
		if len(prune) > 0 {
			if err := s.applyQuiet(ctx, fsm.ApprovalPruneType, fsm.ApprovalPrune{IDs: prune, At: now}); err != nil {
				s.logger.Warn("could not prune approvals", "error", err)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
