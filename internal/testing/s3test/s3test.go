// Package s3test starts a real S3-compatible server for tests: SeaweedFS's
// `weed server -s3`, over TLS, on free loopback ports, with one identity
// and one bucket, removed when the test ends. MinIO's community edition
// is source-only and in maintenance mode; SeaweedFS builds from the Go
// module proxy (.ci/run builds it into ~/.cache/atomfed/weed).
package s3test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/testutil"
	"github.com/atomcloud/atomfed/internal/tlsutil"
)

// EnvBinary names the weed binary; without it Binary looks in the cache
// .ci/run fills.
const EnvBinary = "ATOMFED_WEED"

// Binary returns the weed binary: $ATOMFED_WEED, else
// ~/.cache/atomfed/weed/weed; "" when neither exists.
func Binary() string {
	cands := []string{os.Getenv(EnvBinary)}
	if home, err := os.UserHomeDir(); err == nil {
		cands = append(cands, filepath.Join(home, ".cache", "atomfed", "weed", "weed"))
	}
	for _, c := range cands {
		if st, err := os.Stat(c); c != "" && err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return c
		}
	}
	return ""
}

// Server is a running weed server with an S3 gateway over TLS.
type Server struct {
	// Endpoint is host:port of the S3 gateway (https).
	Endpoint string
	// CAFile verifies its certificate.
	CAFile        string
	Bucket        string
	Region        string
	KeyID, Secret string
	Dir           string
	cmd           *exec.Cmd
	log           *bytes.Buffer
}

// Start starts a server for the test, or skips the test, loudly, when no
// weed binary is installed (.ci/run always builds one, so CI runs it).
func Start(t *testing.T, bucket string) *Server {
	t.Helper()
	bin := Binary()
	if bin == "" {
		t.Skipf("SKIPPED, NOT RUN: no SeaweedFS weed binary (set %s, or run .ci/run, which builds it into ~/.cache/atomfed/weed): the S3 repository path is untested here", EnvBinary)
	}
	dir, err := os.MkdirTemp("", "atomfed-s3-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil { // the CA file is read by pgBackRest as postgres
		t.Fatal(err)
	}
	s := &Server{Dir: dir, Bucket: bucket, Region: "us-east-1", KeyID: "AKATOMFED" + strconv.Itoa(os.Getpid()), Secret: "atomfed-test-secret-" + strconv.FormatInt(time.Now().UnixNano(), 36), log: &bytes.Buffer{}}
	t.Cleanup(func() { s.stop(); os.RemoveAll(dir) })
	ca, err := tlsutil.NewCA("atomfed test S3 CA")
	if err != nil {
		t.Fatal(err)
	}
	s.CAFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(s.CAFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue("127.0.0.1", []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"s3.crt": cert, "s3.key": key,
		"s3.json": fmt.Appendf(nil, `{"identities":[{"name":"atomfed","credentials":[{"accessKey":%q,"secretKey":%q}],"actions":["Admin","Read","List","Tagging","Write"]}]}`, s.KeyID, s.Secret)} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	port := func() string { return strconv.Itoa(testutil.FreePort(t)) }
	master, masterGRPC, https := port(), port(), port()
	// pgBackRest matches the host name against the certificate's DNS
	// names only, not its IP addresses.
	s.Endpoint = "localhost:" + https
	args := []string{"server", "-dir=" + data, "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.volumeSizeLimitMB=64", "-volume.max=4",
		"-master.port=" + master, "-master.port.grpc=" + masterGRPC, "-volume.port=" + port(), "-volume.port.grpc=" + port(),
		"-filer.port=" + port(), "-filer.port.grpc=" + port(),
		"-s3", "-s3.port=" + port(), "-s3.port.grpc=" + port(), "-s3.port.https=" + https, "-s3.port.iceberg=0", "-s3.port.lance=0",
		"-s3.cert.file=" + filepath.Join(dir, "s3.crt"), "-s3.key.file=" + filepath.Join(dir, "s3.key"), "-s3.config=" + filepath.Join(dir, "s3.json")}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start weed: %v", err)
	}
	// The bucket, once the master and filer are up (weed shell waits
	// for them; the filer takes about 10 s to join). The master's
	// address names its gRPC port (host:port.grpc), which is not the
	// default port+10000 here.
	err = testutil.Poll(60*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		sh := exec.CommandContext(ctx, bin, "shell", "-master=127.0.0.1:"+master+"."+masterGRPC)
		sh.Dir = dir
		sh.Stdin = strings.NewReader("s3.bucket.create -name " + bucket + "\n")
		out, err := sh.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "created bucket") {
			return fmt.Errorf("create bucket: %v: %s", err, out)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("weed server did not come up: %v\n%s", err, tailOf(s.log.String()))
	}
	err = testutil.Poll(30*time.Second, func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:"+https, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		t.Fatalf("the S3 gateway does not listen on %s: %v\n%s", s.Endpoint, err, tailOf(s.log.String()))
	}
	return s
}

// Env returns the agent environment that points backups at this server.
func (s *Server) Env() []string {
	return []string{"S3_ENDPOINT=" + s.Endpoint, "S3_BUCKET=" + s.Bucket, "S3_REGION=" + s.Region, "S3_CA_FILE=" + s.CAFile,
		"S3_ACCESS_KEY_ID=" + s.KeyID, "S3_SECRET_ACCESS_KEY=" + s.Secret}
}

func (s *Server) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	// A throwaway server: nothing to flush (a graceful stop takes 10 s).
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func tailOf(s string) string {
	if len(s) > 3000 {
		return "..." + s[len(s)-3000:]
	}
	return s
}
