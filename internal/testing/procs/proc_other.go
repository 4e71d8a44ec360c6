//go:build !linux

package procs

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; t.Cleanup still
// kills every child.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
