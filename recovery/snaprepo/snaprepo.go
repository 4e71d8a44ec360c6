// Package snaprepo stores the control plane's snapshot archives in a
// repository: a directory (the default: local or shared storage) or an S3
// bucket (when S3_ENDPOINT is set, with the same settings as the region
// backups, recovery.S3FromEnv). The leader ships to it on the snapshot
// policy's schedule (cluster/leader_snapship.go) and reads from it for
// `atomfed snapshot restore --from-repo`. Errors say what is wrong with the
// repository (unreachable, wrong credentials, read-only, full, missing)
// and never carry a credential.
package snaprepo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/atomcloud/atomfed/recovery"
)

// Store is a snapshot repository. Names are plain file names (no
// separators); Location gives where a name is stored, for the catalog.
type Store interface {
	Put(ctx context.Context, name string, data []byte) error
	Get(ctx context.Context, name string, max int64) ([]byte, error)
	Delete(ctx context.Context, name string) error
	Location(name string) string
	// String names the repository (path or s3://bucket/prefix).
	String() string
}

// ErrNotFound is a name the repository does not hold.
var ErrNotFound = errors.New("not in the snapshot repository")

// FromEnv returns the repository the server uses: S3 when S3_ENDPOINT is
// set (recovery.S3FromEnv's settings; the objects go under
// <S3_PATH>/controlplane), else the directory dir (nil when dir is empty:
// no repository).
func FromEnv(getenv func(string) string, dir string) (Store, error) {
	repo, ok, err := recovery.S3FromEnv(getenv)
	if err != nil {
		return nil, fmt.Errorf("snapshot repository: %w", err)
	}
	if ok {
		return NewS3(repo.S3, repo.Path)
	}
	if dir == "" {
		return nil, nil
	}
	return NewDir(dir)
}

// Dir is a directory repository.
type Dir struct{ path string }

// NewDir returns the repository in directory path (absolute; created if
// missing).
func NewDir(path string) (*Dir, error) {
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("snapshot repository %q must be an absolute path (--snapshot-repo)", path)
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot repository %s: %w", path, explainFS(err))
	}
	return &Dir{path: filepath.Clean(path)}, nil
}

func (d *Dir) String() string              { return d.path }
func (d *Dir) Location(name string) string { return filepath.Join(d.path, name) }

func validName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return fmt.Errorf("snapshot object name %q is not a plain file name", name)
	}
	return nil
}

// Put writes the object through a temporary file, synced and renamed, so
// that a reader never sees half an archive.
func (d *Dir) Put(_ context.Context, name string, data []byte) error {
	if err := validName(name); err != nil {
		return err
	}
	tmp := filepath.Join(d.path, "."+name+".part")
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.Write(data); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		return os.Rename(tmp, d.Location(name))
	}()
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("snapshot repository %s: write %s: %w", d.path, name, explainFS(err))
	}
	if dir, err := os.Open(d.path); err == nil {
		_ = dir.Sync()
		dir.Close()
	}
	return nil
}

// Get reads an object of at most max bytes.
func (d *Dir) Get(_ context.Context, name string, max int64) ([]byte, error) {
	if err := validName(name); err != nil {
		return nil, err
	}
	f, err := os.Open(d.Location(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", d.Location(name), ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("snapshot repository %s: read %s: %w", d.path, name, explainFS(err))
	}
	defer f.Close()
	return readMax(f, max, d.Location(name))
}

// Delete removes an object; one already gone is not an error.
func (d *Dir) Delete(_ context.Context, name string) error {
	if err := validName(name); err != nil {
		return err
	}
	if err := os.Remove(d.Location(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot repository %s: delete %s: %w", d.path, name, explainFS(err))
	}
	return nil
}

func readMax(r io.Reader, max int64, where string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", where, err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a snapshot archive", where, max)
	}
	return b, nil
}

// explainFS says what a file system error means for the repository.
func explainFS(err error) error {
	switch {
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("the repository is read-only: %w", err)
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		return fmt.Errorf("the repository is full: %w", err)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("the server may not write the repository (permissions): %w", err)
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("the repository directory is missing or not a directory (unreachable): %w", err)
	}
	return err
}
