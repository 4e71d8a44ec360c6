//go:build !linux

package recovery

import "syscall"

// sysProcAttr runs pgBackRest as cred.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
