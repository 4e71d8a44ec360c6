package recovery_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/internal/pglocal"
	"github.com/atomcloud/atomfed/internal/testing/pgtest"
	"github.com/atomcloud/atomfed/internal/testing/s3test"
	"github.com/atomcloud/atomfed/recovery"
)

// TestBackupToS3 backs a real PostgreSQL up into a real S3-compatible
// server (SeaweedFS over TLS) with the repository read from the
// environment, as an agent does when S3_ENDPOINT is set, and encrypted
// with a passphrase: WAL archiving and a verified full backup land in the
// bucket; wrong credentials fail the backup with pgBackRest's error; the
// secret key and the passphrase appear in no report, no log line and no
// repository description.
func TestBackupToS3(t *testing.T) {
	t.Parallel() // mostly waiting: for PostgreSQL, pgBackRest, SeaweedFS
	needPgBackRest(t)
	start := time.Now()
	s3 := s3test.Start(t, "atomfed-backups")
	t.Logf("weed server up in %s", time.Since(start).Round(time.Millisecond))
	pg := pgtest.New(t, pglocal.Options{Name: "s3"})
	env := map[string]string{}
	for _, kv := range s3.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	repo, ok, err := recovery.S3FromEnv(func(k string) string { return env[k] })
	if err != nil || !ok || repo.Kind != fsm.RepoS3 || repo.Path != recovery.DefaultS3Path {
		t.Fatalf("S3 repository from the environment: %+v %v %v", repo.Describe(), ok, err)
	}
	repo.CipherPass = "atomfed-test-passphrase-" + s3.Secret[len(s3.Secret)-6:]
	var logs bytes.Buffer
	logger := hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Debug})
	dir := sharedDir(t, "s3")
	x, err := recovery.NewExecutor(recovery.Config{DSN: pg.DSN(pglocal.Database), Dir: filepath.Join(dir, "work"), Repo: repo, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var s statuses
	if err := x.Run(ctx, backupTask(t, "us-east-1", fsm.BackupFull), s.report); err != nil {
		t.Fatal(err)
	}
	st, p := s.last(t)
	if st.Status != fsm.TaskSucceeded || p.Result == nil || !p.Result.Verified || p.Result.Label == "" || p.Result.WALStart == "" {
		t.Fatalf("S3 backup: %+v %+v", st, p.Result)
	}
	if r := p.Result.Repo; r.Kind != fsm.RepoS3 || r.Bucket != "atomfed-backups" || r.Endpoint != s3.Endpoint || !r.Encrypted {
		t.Fatalf("repository in the result: %+v", r)
	}
	// The backup is in the bucket: SeaweedFS keeps buckets as filer
	// directories, so its data directory grew; ask pgBackRest instead of
	// guessing its layout.
	b, _ := os.ReadFile(filepath.Join(dir, "work", "pgbackrest.conf"))
	if st, err := os.Stat(filepath.Join(dir, "work", "pgbackrest.conf")); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pgbackrest.conf holds the S3 key: it must be 0600: %v %v", st.Mode(), err)
	}
	if !strings.Contains(string(b), "repo1-type=s3") || !strings.Contains(string(b), "repo1-cipher-type=aes-256-cbc") {
		t.Fatalf("pgbackrest.conf does not use S3:\n%s", b)
	}

	t.Logf("backup and verify done at %s", time.Since(start).Round(time.Millisecond))
	env["S3_SECRET_ACCESS_KEY"] = "wrong-" + s3.Secret
	bad, _, _ := recovery.S3FromEnv(func(k string) string { return env[k] })
	xb, err := recovery.NewExecutor(recovery.Config{DSN: pg.DSN(pglocal.Database), Dir: filepath.Join(dir, "work-bad"), Repo: bad, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	var sb statuses
	if err := xb.Run(ctx, backupTask(t, "us-east-2", fsm.BackupFull), sb.report); err != nil {
		t.Fatal(err)
	}
	st, p = sb.last(t)
	if st.Status != fsm.TaskFailing || p.Result == nil || !strings.Contains(p.Result.Error, "pgbackrest") {
		t.Fatalf("backup with a wrong S3 secret: %+v %+v", st, p.Result)
	}
	t.Logf("wrong credentials, at %s: %s", time.Since(start).Round(time.Millisecond), p.Result.Error)
	for _, all := range [][]byte{logs.Bytes(), []byte(reports(&s) + reports(&sb))} {
		for _, secret := range []string{s3.Secret, pg.Password, repo.CipherPass} {
			if bytes.Contains(all, []byte(secret)) {
				t.Fatalf("a secret leaked into a log or report:\n%s", all)
			}
		}
	}
}
