package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// ForwardConn is one forwarding-RPC connection to a server's raft port,
// opened and spoken exactly as a follower does. Servers forward through
// Server.ForwardApply; ForwardConn is for tests that play a compromised
// server host (one holding a server certificate) from another process and
// send the leader forwarded commands of their choosing.
type ForwardConn struct {
	c    *fwdConn
	addr string
}

// DialForward opens a forwarding-RPC connection to the raft port at addr
// with the client TLS configuration tlsCfg (which must present a server
// certificate: the port refuses any other in the handshake).
func DialForward(addr string, tlsCfg *tls.Config, timeout time.Duration) (*ForwardConn, error) {
	if tlsCfg == nil {
		return nil, errors.New("dial forward: no TLS configuration")
	}
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", addr, tlsCfg)
	if err != nil {
		return nil, fmt.Errorf("dial forward %s: %w", addr, err)
	}
	c, err := openFwdConn(tc)
	if err != nil {
		return nil, fmt.Errorf("dial forward %s: %w", addr, err)
	}
	return &ForwardConn{c: c, addr: addr}, nil
}

// Apply forwards command t with body, encoded as this release's servers
// encode it (MessagePack, a Ruled command under the current rules) and
// stamped now, naming caller's bearer token as its caller; caller ""
// forwards it naming none, as a follower of an older release did. It
// returns what Server.ForwardApply returns: the leader's refusal as an
// error (an *fsm.Error for a refused caller), the FSM's rejection in the
// result.
func (f *ForwardConn) Apply(ctx context.Context, caller string, t fsm.MessageType, body any) (*structs.ForwardResult, error) {
	if r, ok := body.(fsm.Ruled); ok {
		body = r.WithRules(fsm.RulesTrustBound)
	}
	data, err := fsm.EncodeWith(fsm.CodecMsgpack, t, body)
	if err != nil {
		return nil, err
	}
	kind := fwdApply
	if caller != "" {
		kind, data = fwdApplyAs, callerData(caller, data)
	}
	return f.c.apply(ctx, f.addr, kind, data, "", time.Now().UnixNano())
}

// Close closes the connection.
func (f *ForwardConn) Close() error {
	f.c.close(ErrShuttingDown)
	return nil
}
