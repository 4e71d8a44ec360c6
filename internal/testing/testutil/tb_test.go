package testutil

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// The testing package's own T satisfies TB (the harnesses take either).
var _ TB = (*testing.T)(nil)

func TestRunTBTurnsFatalfIntoAnError(t *testing.T) {
	var dir string
	var order []string
	reached := false
	err := RunTB(t.TempDir(), nil, func(tb TB) error {
		dir = tb.TempDir()
		tb.Cleanup(func() { order = append(order, "first") })
		tb.Cleanup(func() { order = append(order, "second") })
		tb.Fatalf("no leader after %d s", 15)
		reached = true
		return nil
	})
	if err == nil || err.Error() != "no leader after 15 s" {
		t.Fatalf("RunTB = %v, want the Fatalf message", err)
	}
	if reached {
		t.Fatal("fn went on after Fatalf")
	}
	if strings.Join(order, ",") != "second,first" {
		t.Fatalf("cleanups ran as %v, want last in first out", order)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("temp dir %s still there after RunTB (%v)", dir, err)
	}
}

func TestRunTBReturnsFnsErrorAndACleanupsFatalf(t *testing.T) {
	want := errors.New("measurement failed")
	if err := RunTB(t.TempDir(), nil, func(TB) error { return want }); err != want {
		t.Fatalf("RunTB = %v, want fn's error", err)
	}
	err := RunTB(t.TempDir(), nil, func(tb TB) error {
		tb.Cleanup(func() { tb.Fatalf("shutdown failed") })
		return nil
	})
	if err == nil || err.Error() != "shutdown failed" {
		t.Fatalf("RunTB = %v, want the cleanup's Fatalf", err)
	}
}
