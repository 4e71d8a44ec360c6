package cluster

import (
	"net"
	"syscall"
)

// peerState looks at a TCP connection without waiting and without
// consuming data (a non-blocking MSG_PEEK read): peerGone when the peer
// has closed or reset it, peerSentData when unread data waits, peerQuiet
// otherwise.
func peerState(c net.Conn) peerCondition {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return peerQuiet
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return peerQuiet
	}
	state := peerQuiet
	_ = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil && n == 0:
			state = peerGone // end of stream
		case err == nil:
			state = peerSentData
		case err == syscall.EAGAIN || err == syscall.EINTR:
		default:
			state = peerGone // ECONNRESET and the like
		}
		return true // a single attempt: never wait for readiness
	})
	return state
}
