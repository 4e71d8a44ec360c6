package recovery

import "syscall"

// sysProcAttr runs pgBackRest as cred and stops it when the agent dies,
// so that a killed agent leaves no backup running under a lock its
// successor would wait for.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM}
}
