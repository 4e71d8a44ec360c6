package deploy_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// atomfedBin is the atomfed binary built as `make image` builds it
// (static, CGO_ENABLED=0, trimmed), shared by the tests of this module.
var atomfedBin string

// testVersion is the version stamped into that binary.
const testVersion = "0.1.0-deploytest"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "atomfed-deploy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	atomfedBin = filepath.Join(dir, "atomfed")
	// The main module is the parent directory.
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+testVersion, "-o", atomfedBin, "./cmd/atomfed")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building atomfed: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
