package cluster

import (
	"net"
	"syscall"
)

// peerClosed reports whether the peer has closed or reset c, without
// waiting and without consuming data: a non-blocking MSG_PEEK read that
// returns 0 bytes (end of stream) or an error other than EAGAIN.
func peerClosed(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	_ = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case err == nil:
			closed = n == 0
		case err == syscall.EAGAIN || err == syscall.EINTR:
		default:
			closed = true // ECONNRESET and the like
		}
		return true // a single attempt: never wait for readiness
	})
	return closed
}
