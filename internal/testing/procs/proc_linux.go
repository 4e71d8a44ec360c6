package procs

import "syscall"

// sysProcAttr makes the kernel kill a child when the process that started
// it dies, so a crashed or timed-out test run leaves no atomfed behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
