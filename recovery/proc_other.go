//go:build !linux

package recovery

import "syscall"

// background leaves the child's priority as it is.
func background(int) {}

// sysProcAttr runs pgBackRest as cred.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}

// scratchProcAttr runs a drill's scratch server as cred.
func scratchProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred}
}
