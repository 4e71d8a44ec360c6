//go:build !linux

package pglocal

import (
	"syscall"
	"time"
)

func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}

func becomeSubreaper()                       {}
func childrenOf(int) []int                   { return nil }
func reap(pids []int, timeout time.Duration) {}
