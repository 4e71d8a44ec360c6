//go:build !linux

package e2e

import "syscall"

// sysProcAttr has no parent-death signal outside Linux; t.Cleanup still
// kills every child.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
