// Package recovery is the disaster recovery coordinator's database side
// (G.1.6): it drives pgBackRest on a region agent to archive the region's
// PostgreSQL WAL, take full and incremental backups into a repository (a
// filesystem path or S3), verify them, and report what it did as the
// result of a backup task. The leader decides when a region is backed up
// (its backup policy, in the FSM); this package only runs a backup and
// describes it.
//
// pgBackRest does the copying, checksumming, retention and WAL archiving;
// atomfed adds the schedule, the placement on a live agent of the region
// (a failed agent's backup moves to a peer), the catalog in the FSM, and
// verification after every backup (pgBackRest's verify runs only when
// asked).
//
// Secrets (S3 keys, the repository cipher passphrase, the database
// password) reach pgBackRest only through its configuration file (mode
// 0600, owned by the user PostgreSQL runs as, since archive-push runs
// inside PostgreSQL) and its environment: never the command line, a log
// line, a task result or the FSM.
package recovery
