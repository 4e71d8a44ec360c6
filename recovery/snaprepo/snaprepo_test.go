package snaprepo

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/s3test"
)

func roundTrip(t *testing.T, st Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("archive "), 1000)
	if err := st.Put(ctx, "s1.snap", data); err != nil {
		t.Fatal(err)
	}
	got, err := st.Get(ctx, "s1.snap", 1<<20)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, %v; want %d", len(got), err, len(data))
	}
	if _, err := st.Get(ctx, "s1.snap", 100); err == nil || !strings.Contains(err.Error(), "larger than 100 bytes") {
		t.Fatalf("an object over the bound: %v", err)
	}
	if _, err := st.Get(ctx, "nope.snap", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a missing object: %v, want ErrNotFound", err)
	}
	if err := st.Put(ctx, "../x", data); err == nil {
		t.Fatal("a name with a separator was written")
	}
	if err := st.Delete(ctx, "s1.snap"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Get(ctx, "s1.snap", 1<<20); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted object: %v", err)
	}
	if err := st.Delete(ctx, "s1.snap"); err != nil {
		t.Fatalf("deleting an object already gone: %v", err)
	}
}

func TestDirRepository(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "repo")
	st, err := NewDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, st)
	if _, err := NewDir("relative/repo"); err == nil {
		t.Fatal("a relative repository was accepted")
	}
	// A repository whose directory is gone (unmounted, replaced): the
	// write fails saying so, and leaves nothing behind.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a dir"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = st.Put(context.Background(), "s2.snap", []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "missing or not a directory (unreachable)") {
		t.Fatalf("write to a repository that is a file: %v", err)
	}
}

// TestS3Repository ships, reads back and deletes an archive in a real
// SeaweedFS bucket over TLS, and checks that wrong credentials and an
// unreachable endpoint fail clearly without the secret in the error.
func TestS3Repository(t *testing.T) {
	srv := s3test.Start(t, "atomfed-snapshots")
	env := map[string]string{}
	for _, kv := range srv.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	getenv := func(k string) string { return env[k] }
	st, err := FromEnv(getenv, "/ignored/when/s3")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.(*S3); !ok || !strings.HasPrefix(st.Location("a.snap"), "s3://atomfed-snapshots/") {
		t.Fatalf("repository from S3_ENDPOINT: %T %s", st, st.Location("a.snap"))
	}
	roundTrip(t, st)

	env["S3_SECRET_ACCESS_KEY"] = "wrong-" + srv.Secret
	bad, err := FromEnv(getenv, "")
	if err != nil {
		t.Fatal(err)
	}
	err = bad.Put(context.Background(), "s3.snap", []byte("x"))
	if err == nil || !strings.Contains(err.Error(), "wrong S3 credentials") || strings.Contains(err.Error(), srv.Secret) {
		t.Fatalf("upload with a wrong secret: %v", err)
	}
	env["S3_SECRET_ACCESS_KEY"] = srv.Secret
	env["S3_ENDPOINT"] = "127.0.0.1:1"
	gone, err := FromEnv(getenv, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := gone.Put(ctx, "s4.snap", []byte("x")); err == nil || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("upload to an endpoint nobody listens on: %v", err)
	}
}
