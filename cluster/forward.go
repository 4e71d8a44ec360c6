package cluster

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/structs"
)

// The forwarding RPC carries writes and read-index requests from followers
// to the leader over the raft port's mutual TLS, on a few persistent
// multiplexed connections. A follower does all the HTTP, TLS, decoding,
// validation and encoding of a request itself and sends the leader only
// the encoded command; the leader commits it and answers with the result.
// Linearizable reads on a follower ask the leader for its applied index
// (after it confirmed its leadership with a quorum) and are then served
// from the follower's own state once it has applied that far.
//
// Frames, both ways: length (uint32, of what follows), request id (uint64),
// kind (1 byte), payload.
const (
	fwdApply     byte = 1 // payload: stamp (int64 unix ns), key length (uint16), batch key, encoded command
	fwdReadIndex byte = 2 // payload: none; answer: applied index (uint64)
	fwdResult    byte = 3 // answer to fwdApply: index (uint64), outcome byte, the value (MessagePack) or a fwdErr (JSON)
	fwdIndex     byte = 4 // answer to fwdReadIndex
	fwdError     byte = 5 // answer: JSON fwdErr
	// fwdApplyAs is fwdApply naming its caller (protocol 4): payload:
	// stamp, key length (uint16), batch key, token length (uint16), the
	// caller's bearer token, encoded command. The leader checks with the
	// token that the caller may make the command.
	fwdApplyAs byte = 6

	fwdMaxFrame = 8 << 20
	// fwdMaxStampSkew bounds how far a follower's stamp of a command may be
	// from the leader's clock: servers must keep their clocks in sync.
	fwdMaxStampSkew = 2 * time.Second
	// fwdConns is how many connections a follower keeps to the leader.
	fwdConns = 4
)

// Outcome bytes of a fwdResult answer.
const (
	fwdOutcomeValue    byte = 0 // the apply's value, fsm.MarshalResult (may be empty)
	fwdOutcomeRejected byte = 1 // JSON fwdErr: the FSM rejected the command
)

// fwdErr carries an error across: a business rejection (Kind is one of
// fsm's sentinels) or a cluster condition (Kind "cluster").
type fwdErr struct {
	Kind    string `json:"kind"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

var fsmKinds = map[string]error{
	"invalid": fsm.ErrInvalid, "not_found": fsm.ErrNotFound, "conflict": fsm.ErrConflict,
	"failed_precondition": fsm.ErrFailedPrecondition, "forbidden": fsm.ErrForbidden,
	"too_many": fsm.ErrTooMany, // protocol 4: only rules 4 refuse with it
}

var clusterErrs = map[string]error{
	"not_leader": ErrNotLeader, "no_leader": ErrNoLeader, "outcome_unknown": ErrOutcomeUnknown,
	"busy": ErrBusy, "shutting_down": ErrShuttingDown, "upgrade_in_progress": ErrUpgradeInProgress,
}

func toFwdErr(err error) *fwdErr {
	var fe *fsm.Error
	if errors.As(err, &fe) {
		for k, v := range fsmKinds {
			if errors.Is(fe.Kind, v) {
				return &fwdErr{Kind: k, Code: fe.Code, Message: fe.Message}
			}
		}
	}
	for k, v := range clusterErrs {
		if errors.Is(err, v) {
			return &fwdErr{Kind: "cluster", Code: k, Message: err.Error()}
		}
	}
	return &fwdErr{Kind: "cluster", Code: "outcome_unknown", Message: err.Error()}
}

func (e *fwdErr) err() error {
	if k, ok := fsmKinds[e.Kind]; ok {
		return &fsm.Error{Kind: k, Code: e.Code, Message: e.Message}
	}
	if c, ok := clusterErrs[e.Code]; ok {
		return fmt.Errorf("%w (from the leader: %s)", c, e.Message)
	}
	return fmt.Errorf("%w: %s", ErrOutcomeUnknown, e.Message)
}

func writeFrame(w *bufio.Writer, id uint64, kind byte, payload []byte) error {
	var hdr [13]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(9+len(payload)))
	binary.BigEndian.PutUint64(hdr[4:12], id)
	hdr[12] = kind
	if _, err := w.Write(hdr[:]); err != nil {
		return err
	}
	_, err := w.Write(payload)
	return err
}

type frame struct {
	id      uint64
	kind    byte
	payload []byte
}

// frameWriter owns the write side of a forwarding connection. A sender
// that finds nobody writing writes its frame itself; frames that arrive
// while a write is in progress queue up and are written and flushed
// together by that writer when it is done. So an idle connection costs no
// goroutine hand-off, and under load many requests or answers share one
// TLS record and one write system call.
type frameWriter struct {
	c     net.Conn
	w     *bufio.Writer
	onErr func(error) // called once, outside the lock, when a write fails

	mu      sync.Mutex
	queue   []frame
	writing bool
	failed  bool
}

func newFrameWriter(c net.Conn, onErr func(error)) *frameWriter {
	return &frameWriter{c: c, w: bufio.NewWriterSize(c, 64<<10), onErr: onErr}
}

// send writes f, or queues it for the writer in progress. It reports false
// when the connection has failed or stopped.
func (fw *frameWriter) send(f frame) bool {
	fw.mu.Lock()
	if fw.failed {
		fw.mu.Unlock()
		return false
	}
	fw.queue = append(fw.queue, f)
	if fw.writing {
		fw.mu.Unlock()
		return true
	}
	fw.writing = true
	var err error
	for len(fw.queue) > 0 && err == nil {
		batch := fw.queue
		fw.queue = nil
		fw.mu.Unlock()
		_ = fw.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for _, b := range batch {
			if err = writeFrame(fw.w, b.id, b.kind, b.payload); err != nil {
				break
			}
		}
		if err == nil {
			err = fw.w.Flush()
		}
		fw.mu.Lock()
	}
	fw.writing = false
	if err != nil {
		fw.failed = true
		fw.queue = nil
	}
	fw.mu.Unlock()
	if err != nil {
		fw.onErr(err)
	}
	return true
}

// stop refuses further frames.
func (fw *frameWriter) stop() {
	fw.mu.Lock()
	fw.failed = true
	fw.queue = nil
	fw.mu.Unlock()
}

func readFrame(r *bufio.Reader) (id uint64, kind byte, payload []byte, err error) {
	var hdr [13]byte
	if _, err = io.ReadFull(r, hdr[:]); err != nil {
		return 0, 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n < 9 || n > fwdMaxFrame {
		return 0, 0, nil, fmt.Errorf("forwarding frame of %d bytes", n)
	}
	payload = make([]byte, n-9)
	if _, err = io.ReadFull(r, payload); err != nil {
		return 0, 0, nil, err
	}
	return binary.BigEndian.Uint64(hdr[4:12]), hdr[12], payload, nil
}

// serveForward answers one follower connection (leader side). Each request
// runs in its own goroutine; answers are written as they complete.
func (s *Server) serveForward(c net.Conn) {
	defer c.Close()
	r := bufio.NewReaderSize(c, 64<<10)
	fw := newFrameWriter(c, func(error) { c.Close() })
	defer fw.stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	answer := func(id uint64, kind byte, payload []byte) {
		fw.send(frame{id: id, kind: kind, payload: payload})
	}
	for {
		id, kind, payload, err := readFrame(r)
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.handleForward(id, kind, payload, answer)
		}()
	}
}

func (s *Server) handleForward(id uint64, kind byte, payload []byte, answer func(uint64, byte, []byte)) {
	ctx, cancel := context.WithTimeout(s.shutdownCtx, 30*time.Second)
	defer cancel()
	fail := func(err error) {
		b, _ := json.Marshal(toFwdErr(err))
		answer(id, fwdError, b)
	}
	switch kind {
	case fwdApply, fwdApplyAs:
		if len(payload) < 10 {
			fail(errors.New("short forwarded command"))
			return
		}
		stamp := time.Unix(0, int64(binary.BigEndian.Uint64(payload[:8])))
		klen := int(binary.BigEndian.Uint16(payload[8:10]))
		if len(payload) < 10+klen {
			fail(errors.New("short forwarded command"))
			return
		}
		key, data := string(payload[10:10+klen]), payload[10+klen:]
		var caller string
		if kind == fwdApplyAs {
			if len(data) < 2 || len(data) < 2+int(binary.BigEndian.Uint16(data[:2])) {
				fail(errors.New("short forwarded command"))
				return
			}
			tlen := int(binary.BigEndian.Uint16(data[:2]))
			caller, data = string(data[2:2+tlen]), data[2+tlen:]
		}
		now := time.Now
		if s.cfg.Now != nil {
			now = s.cfg.Now
		}
		if d := now().Sub(stamp); d > fwdMaxStampSkew || d < -fwdMaxStampSkew {
			fail(fmt.Errorf("%w: the forwarding server's clock is %s off the leader's; keep the servers' clocks in sync", ErrBusy, d.Round(time.Millisecond)))
			return
		}
		// The leader logs only what it can vouch for: a command it
		// applies, whose body decodes, of a protocol every server of the
		// configuration speaks. A forwarder never reaches raft.Apply with
		// bytes a server could not decode.
		t, decoded, err := fsm.DecodeCommand(data)
		if err != nil {
			s.metrics.forwardRefused.Inc()
			s.logger.Warn("refused a forwarded command that does not decode", "error", err)
			fail(err)
			return
		}
		min, _ := s.protocols()
		if min < commandProtocol[t] {
			fail(fmt.Errorf("%w (%s needs protocol %d, the cluster speaks %d)", ErrUpgradeInProgress, t, commandProtocol[t], min))
			return
		}
		if r, ok := decoded.(fsm.Ruled); ok && r.LoggedRules() > min {
			// Stamped under rules a server of the configuration does not
			// apply: it would come to another state.
			fail(fmt.Errorf("%w (%s under rules %d, the cluster speaks %d)", ErrUpgradeInProgress, t, r.LoggedRules(), min))
			return
		}
		if err := s.authorizeForwarded(kind, caller, t, decoded, min); err != nil {
			s.metrics.forwardRefused.Inc()
			s.logger.Warn("refused a forwarded command its caller may not make", "command", t.String(), "error", err)
			fail(err)
			return
		}
		res, err := s.applyKeyed(ctx, data, key)
		if err != nil {
			fail(err)
			return
		}
		var body []byte
		outcome := fwdOutcomeValue
		if res.Err != nil {
			outcome = fwdOutcomeRejected
			body, _ = json.Marshal(toFwdErr(res.Err))
		} else if res.Value != nil {
			body, _ = fsm.MarshalResult(res.Value)
		}
		b := make([]byte, 9, 9+len(body))
		binary.BigEndian.PutUint64(b[:8], res.Index)
		b[8] = outcome
		answer(id, fwdResult, append(b, body...))
	case fwdReadIndex:
		if s.raft.State() != raft.Leader {
			// Never pass a read index request on: two servers that each
			// believe the other leads would bounce it between them.
			fail(ErrNotLeader)
			return
		}
		if err := s.ConsistentRead(ctx); err != nil {
			fail(err)
			return
		}
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], s.fsm.AppliedIndex())
		answer(id, fwdIndex, b[:])
	default:
		fail(fmt.Errorf("unknown forwarding request %d", kind))
	}
}

// ForwardAuthorizer checks, on the leader, that the caller whose bearer
// token a follower forwarded may make command t (its decoded body): what
// the follower's API checked, checked again by the leader, so that a
// server cannot commit more than its caller could. It returns an
// fsm.Error (kind forbidden) when not.
type ForwardAuthorizer func(token string, t fsm.MessageType, cmd any) error

// SetForwardAuthorizer installs the check the leader applies to forwarded
// commands (the HTTP API's, built after the server).
func (s *Server) SetForwardAuthorizer(f ForwardAuthorizer) { s.fwdAuth.Store(&f) }

// authorizeForwarded applies the forward authorizer: to the caller of a
// fwdApplyAs, and, once every server forwards callers (protocol 4), it
// refuses a forwarded command that names none.
func (s *Server) authorizeForwarded(kind byte, caller string, t fsm.MessageType, cmd any, min int) error {
	f := s.fwdAuth.Load()
	if f == nil {
		return nil
	}
	if kind != fwdApplyAs {
		if min < protocolForwardCaller {
			return nil // a follower of an older release
		}
		return &fsm.Error{Kind: fsm.ErrForbidden, Code: "no_caller", Message: "a forwarded write must name its caller"}
	}
	return (*f)(caller, t, cmd)
}

// fwdClient is a follower's pool of connections to the leader.
type fwdClient struct {
	s    *Server
	mu   sync.Mutex
	addr string // leader raft address the connections go to
	pool []*fwdConn
	next atomic.Uint64
}

type fwdConn struct {
	c       net.Conn
	w       *frameWriter
	mu      sync.Mutex
	pending map[uint64]chan fwdAnswer
	dead    bool
}

type fwdAnswer struct {
	kind    byte
	payload []byte
	err     error
}

var fwdIDs atomic.Uint64

// conn returns a live connection to the leader, dialling one if needed.
func (f *fwdClient) conn(leaderAddr string) (*fwdConn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.addr != leaderAddr {
		for _, c := range f.pool {
			if c != nil { // slots fill as they are first used
				c.close(fmt.Errorf("%w: the leader moved", ErrNotLeader))
			}
		}
		f.pool, f.addr = nil, leaderAddr
	}
	i := int(f.next.Add(1) % fwdConns)
	for len(f.pool) <= i {
		f.pool = append(f.pool, nil)
	}
	if c := f.pool[i]; c != nil && !c.isDead() {
		return c, nil
	}
	nc, _, err := f.s.stream.dialStream(leaderAddr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c, err := openFwdConn(nc)
	if err != nil {
		return nil, err
	}
	f.pool[i] = c
	return c, nil
}

// openFwdConn turns a connection to a raft port into a forwarding-RPC
// connection: it sends fwdMagic and starts reading answers.
func openFwdConn(nc net.Conn) (*fwdConn, error) {
	if _, err := nc.Write([]byte{fwdMagic}); err != nil {
		nc.Close()
		return nil, err
	}
	c := &fwdConn{c: nc, pending: map[uint64]chan fwdAnswer{}}
	c.w = newFrameWriter(nc, c.close)
	go c.readLoop()
	return c, nil
}

func (f *fwdClient) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.pool {
		if c != nil {
			c.close(ErrShuttingDown)
		}
	}
	f.pool = nil
}

func (c *fwdConn) isDead() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dead
}

func (c *fwdConn) readLoop() {
	r := bufio.NewReaderSize(c.c, 64<<10)
	for {
		id, kind, payload, err := readFrame(r)
		if err != nil {
			c.close(err)
			return
		}
		c.mu.Lock()
		ch := c.pending[id]
		delete(c.pending, id)
		c.mu.Unlock()
		if ch != nil {
			ch <- fwdAnswer{kind: kind, payload: payload}
		}
	}
}

// close fails every pending request with err.
func (c *fwdConn) close(err error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	pending := c.pending
	c.pending = map[uint64]chan fwdAnswer{}
	c.mu.Unlock()
	c.w.stop()
	c.c.Close()
	for _, ch := range pending {
		ch <- fwdAnswer{err: err}
	}
}

// call sends a request and waits for its answer. sent reports whether the
// request may have reached the leader (for the outcome of a lost answer).
func (c *fwdConn) call(ctx context.Context, kind byte, payload []byte) (fwdAnswer, bool) {
	id := fwdIDs.Add(1)
	ch := make(chan fwdAnswer, 1)
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return fwdAnswer{err: errors.New("connection closed")}, false
	}
	c.pending[id] = ch
	c.mu.Unlock()
	if !c.w.send(frame{id: id, kind: kind, payload: payload}) {
		// The writer stopped: close has failed (or is failing) every
		// pending request, this one included. Whether the frame left is
		// unknown.
		a := <-ch
		return a, true
	}
	select {
	case a := <-ch:
		return a, true
	case <-ctx.Done():
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		return fwdAnswer{err: ctx.Err()}, true
	}
}

// leaderAddr returns the leader's raft address, or ErrNoLeader.
func (s *Server) leaderAddr() (string, error) {
	addr, id := s.raft.LeaderWithID()
	if addr == "" || string(id) == s.cfg.NodeID {
		return "", ErrNoLeader
	}
	return string(addr), nil
}

// ForwardApply commits a command through the leader from a follower: it
// encodes it here and sends the leader only the bytes. stamp is the time
// stamped into the command (checked by the leader against its clock).
// Errors mean what Apply's mean, plus ErrForwardUnsupported when the leader
// is too old for the RPC (nothing was sent).
func (s *Server) ForwardApply(ctx context.Context, t fsm.MessageType, body any, stamp int64) (*structs.ForwardResult, error) {
	addr, err := s.leaderAddr()
	if err != nil {
		return nil, err
	}
	if s.protocol() < protocolForwardRPC || !s.leaderServesRPC() {
		return nil, ErrForwardUnsupported
	}
	data, err := s.encode(t, body)
	if err != nil {
		return nil, err
	}
	key := fsm.BatchKey(t, body)
	if len(key) > 1024 {
		key = "" // not worth batching; keeps the frame header small
	}
	if caller, ok := structs.CallerOf(ctx); ok && len(caller) <= 1024 {
		if _, leader := s.protocols(); leader >= protocolForwardCaller {
			return s.forwardKind(ctx, addr, fwdApplyAs, callerData(caller, data), key, stamp)
		}
	}
	return s.forwardData(ctx, addr, data, key, stamp)
}

// forwardData sends an encoded command to the leader at addr.
func (s *Server) forwardData(ctx context.Context, addr string, data []byte, key string, stamp int64) (*structs.ForwardResult, error) {
	return s.forwardKind(ctx, addr, fwdApply, data, key, stamp)
}

// forwardKind sends a fwdApply or fwdApplyAs (data then starts with the
// caller) to the leader at addr.
func (s *Server) forwardKind(ctx context.Context, addr string, kind byte, data []byte, key string, stamp int64) (*structs.ForwardResult, error) {
	c, err := s.fwd.conn(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial the leader at %s: %v", ErrNoLeader, addr, err)
	}
	return c.apply(ctx, addr, kind, data, key, stamp)
}

// callerData prefixes an encoded command with its caller's token, as a
// fwdApplyAs carries it.
func callerData(caller string, data []byte) []byte {
	tok := make([]byte, 2, 2+len(caller)+len(data))
	binary.BigEndian.PutUint16(tok, uint16(len(caller)))
	return append(append(tok, caller...), data...)
}

// apply sends a fwdApply or fwdApplyAs on c to the leader at addr and
// decodes its answer.
func (c *fwdConn) apply(ctx context.Context, addr string, kind byte, data []byte, key string, stamp int64) (*structs.ForwardResult, error) {
	payload := make([]byte, 10, 10+len(key)+len(data))
	binary.BigEndian.PutUint64(payload[:8], uint64(stamp))
	binary.BigEndian.PutUint16(payload[8:10], uint16(len(key)))
	payload = append(append(payload, key...), data...)
	a, sent := c.call(ctx, kind, payload)
	switch {
	case a.err != nil && !sent:
		return nil, fmt.Errorf("%w: %v", ErrNoLeader, a.err)
	case a.err != nil:
		return nil, fmt.Errorf("%w: forwarding to the leader at %s: %v", ErrOutcomeUnknown, addr, a.err)
	case a.kind == fwdError:
		var fe fwdErr
		if err := json.Unmarshal(a.payload, &fe); err != nil {
			return nil, fmt.Errorf("%w: bad answer from the leader", ErrOutcomeUnknown)
		}
		return nil, fe.err()
	}
	if len(a.payload) < 9 {
		return nil, fmt.Errorf("%w: short answer from the leader", ErrOutcomeUnknown)
	}
	out := &structs.ForwardResult{Index: binary.BigEndian.Uint64(a.payload[:8])}
	switch body := a.payload[9:]; a.payload[8] {
	case fwdOutcomeValue:
		if len(body) > 0 {
			out.Value = body
		}
	case fwdOutcomeRejected:
		var fe fwdErr
		if err := json.Unmarshal(body, &fe); err != nil {
			return nil, fmt.Errorf("%w: bad answer from the leader", ErrOutcomeUnknown)
		}
		out.Err = fe.err()
	default:
		return nil, fmt.Errorf("%w: bad answer from the leader", ErrOutcomeUnknown)
	}
	return out, nil
}

// fetchReadIndex asks the leader for its applied index after it has
// confirmed its leadership with a quorum.
func (s *Server) fetchReadIndex(ctx context.Context) (uint64, error) {
	addr, err := s.leaderAddr()
	if err != nil {
		return 0, err
	}
	c, err := s.fwd.conn(addr)
	if err != nil {
		return 0, fmt.Errorf("%w: dial the leader at %s: %v", ErrNoLeader, addr, err)
	}
	a, _ := c.call(ctx, fwdReadIndex, nil)
	switch {
	case a.err != nil:
		return 0, fmt.Errorf("%w: read index from the leader at %s: %v", ErrNoLeader, addr, a.err)
	case a.kind == fwdError:
		var fe fwdErr
		_ = json.Unmarshal(a.payload, &fe)
		return 0, fe.err()
	case len(a.payload) != 8:
		return 0, fmt.Errorf("%w: bad read index answer", ErrNoLeader)
	}
	return binary.BigEndian.Uint64(a.payload), nil
}
