//go:build !linux

package cluster

import "net"

// peerClosed is only implemented on Linux; elsewhere a pooled stream is
// used as raft found it.
func peerClosed(net.Conn) bool { return false }
