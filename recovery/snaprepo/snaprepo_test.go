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
