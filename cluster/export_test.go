package cluster

import (
	"context"
	"time"

	"github.com/atomcloud/atomfed/internal/structs"
)

// ForwardRawData sends raw bytes to the leader as a forwarded command, as
// a misbehaving server could (tests of what the leader accepts).
func (s *Server) ForwardRawData(ctx context.Context, data []byte) (*structs.ForwardResult, error) {
	addr, err := s.leaderAddr()
	if err != nil {
		return nil, err
	}
	return s.forwardData(ctx, addr, data, "", time.Now().UnixNano())
}
