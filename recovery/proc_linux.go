package recovery

import "syscall"

// backgroundNice is the CPU priority of pgBackRest and of a drill's
// scratch server: backups and drills are background work and yield to the
// region's PostgreSQL and to the agent.
const backgroundNice = 10

// background lowers a child's CPU priority (best effort).
func background(pid int) { _ = syscall.Setpriority(syscall.PRIO_PROCESS, pid, backgroundNice) }

// sysProcAttr runs pgBackRest as cred and stops it when the agent dies,
// so that a killed agent leaves no backup running under a lock its
// successor would wait for.
func sysProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGTERM}
}

// scratchProcAttr runs a drill's scratch server as cred and kills it when
// the agent dies: it holds nothing worth a clean shutdown.
func scratchProcAttr(cred *syscall.Credential) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Pdeathsig: syscall.SIGKILL}
}
