package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/pflag"

	"github.com/atomcloud/atomfed/cluster/agent"
	"github.com/atomcloud/atomfed/fsm"
	"github.com/atomcloud/atomfed/recovery"
)

// backupOptions are an agent's backup settings (recovery.Config).
type backupOptions struct {
	// Dir is pgBackRest's working directory (default <data-dir>/pgbackrest),
	// Repo the posix repository (default <Dir>/repo), PgBackRest the binary.
	Dir, Repo, PgBackRest string
	// Managed is the region PostgreSQL this agent manages for a rebuild
	// (--pg-data and the other --pg-* flags); without a data directory the
	// agent runs no rebuilds.
	Managed recovery.Managed
}

func addBackupFlags(f *pflag.FlagSet, o *backupOptions) {
	f.StringVar(&o.Dir, "backup-dir", "", "pgBackRest's working directory: its configuration (with the S3 keys), locks and logs; PostgreSQL's OS user must reach it (default $ATOMFED_BACKUP_DIR, else <data-dir>/pgbackrest)")
	f.StringVar(&o.Repo, "backup-repo", "", "the filesystem backup repository when S3_ENDPOINT is not set; every agent of the region must see the same one (default $ATOMFED_BACKUP_REPO, else <backup-dir>/repo)")
	f.StringVar(&o.PgBackRest, "pgbackrest", "", "the pgbackrest binary (default: pgbackrest on $PATH)")
	f.StringVar(&o.Managed.DataDir, "pg-data", "", "the region PostgreSQL's data directory this agent manages: with it, the agent can rebuild the region (atomfed dr rebuild) into it when it is empty")
	f.StringVar(&o.Managed.BinDir, "pg-bin", "", "the directory of postgres and pg_ctl for a rebuild (default: the newest PostgreSQL installed)")
	f.IntVar(&o.Managed.Port, "pg-port", 0, "the port a rebuilt server listens on (default: the one in its restored configuration)")
	f.StringVar(&o.Managed.Socket, "pg-socket", "", "the unix socket directory of a rebuilt server (default: the one in its restored configuration)")
	f.StringVar(&o.Managed.OSUser, "pg-user", "", "the OS user a rebuilt server runs as when the agent runs as root (default postgres)")
}

// backupExecutors returns the backup and restore-drill executors of an
// agent with a region database, or none (with a warning) when pgBackRest
// is not installed.
func backupExecutors(o agentOptions, reg prometheus.Registerer) ([]agent.Executor, error) {
	bin, err := recovery.FindPgBackRest(o.Backup.PgBackRest)
	if err != nil {
		if o.Backup.PgBackRest != "" {
			return nil, err
		}
		o.Logger.Warn("this agent takes no backups of its region: "+err.Error(), "region", o.Region)
		return nil, nil
	}
	dir := firstNonEmpty(o.Backup.Dir, os.Getenv("ATOMFED_BACKUP_DIR"), filepath.Join(o.DataDir, "pgbackrest"))
	if !filepath.IsAbs(dir) {
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, err
		}
	}
	repo, isS3, err := recovery.S3FromEnv(os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("S3 backup repository: %w", err)
	}
	if !isS3 {
		path := firstNonEmpty(o.Backup.Repo, os.Getenv("ATOMFED_BACKUP_REPO"), filepath.Join(dir, "repo"))
		if path, err = filepath.Abs(path); err != nil {
			return nil, err
		}
		repo = recovery.Repository{Kind: fsm.RepoPosix, Path: path}
	}
	if repo.CipherPass, err = cipherPass(); err != nil {
		return nil, err
	}
	x, err := recovery.NewExecutor(recovery.Config{DSN: o.PostgresDSN, PgBackRest: bin, Dir: dir, Repo: repo, Logger: o.Logger, Registerer: reg})
	if err != nil {
		return nil, err
	}
	d := repo.Describe()
	o.Logger.Info("backups ready", "pgbackrest", bin, "repository", d.Kind, "path", d.Path, "bucket", d.Bucket, "endpoint", d.Endpoint, "encrypted", d.Encrypted)
	execs := []agent.Executor{x, recovery.NewDrillExecutor(x)}
	if o.Backup.Managed.DataDir != "" {
		rb, err := recovery.NewRebuildExecutor(x, o.Backup.Managed)
		if err != nil {
			return nil, err
		}
		o.Logger.Info("rebuilds ready", "data_dir", o.Backup.Managed.DataDir)
		execs = append(execs, rb)
	}
	return execs, nil
}

// cipherPass reads the repository passphrase from ATOMFED_BACKUP_CIPHER_PASS
// or the file ATOMFED_BACKUP_CIPHER_PASS_FILE ("" leaves it unencrypted).
func cipherPass() (string, error) {
	if v := os.Getenv("ATOMFED_BACKUP_CIPHER_PASS"); v != "" {
		return v, nil
	}
	f := os.Getenv("ATOMFED_BACKUP_CIPHER_PASS_FILE")
	if f == "" {
		return "", nil
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return "", fmt.Errorf("ATOMFED_BACKUP_CIPHER_PASS_FILE: %w", err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" || strings.ContainsAny(v, "\n\r") {
		return "", errors.New("ATOMFED_BACKUP_CIPHER_PASS_FILE must hold one non-empty line")
	}
	return v, nil
}

func firstNonEmpty(vs ...string) string {
	for _, v := range vs {
		if v != "" {
			return v
		}
	}
	return ""
}
