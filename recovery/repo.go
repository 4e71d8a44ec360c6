package recovery

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"github.com/atomcloud/atomfed/fsm"
)

// Repository is where an agent's backups go, with its secrets. Describe
// gives the secret-free part that task results and the FSM carry.
type Repository struct {
	// Kind is fsm.RepoPosix or fsm.RepoS3.
	Kind string
	// Path is the repository directory (posix) or the path inside the
	// bucket (s3).
	Path string
	S3   S3
	// CipherPass, when set, encrypts the repository (aes-256-cbc). Every
	// agent writing to the repository needs the same one.
	CipherPass string
}

// S3 is an S3 repository's endpoint and credentials.
type S3 struct {
	// Endpoint is host or host:port (an https:// URL is accepted; pgBackRest
	// speaks only TLS to S3).
	Endpoint, Bucket, Region string
	KeyID, Secret            string
	// CAFile verifies the endpoint's certificate (default: system roots).
	CAFile string
	// HostStyle addresses the bucket as a host name (AWS); the default is
	// path style, which S3-compatible servers expect.
	HostStyle bool
}

// DefaultS3Path is the path inside the bucket when none is given.
const DefaultS3Path = "/atomfed"

// S3FromEnv reads an S3 repository from the environment: S3_ENDPOINT (set:
// S3 is used), S3_BUCKET, S3_REGION (default us-east-1), S3_PATH, and the
// credentials from S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY (or
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or from the file named by
// S3_CREDENTIALS_FILE (lines KEY=VALUE with those names). S3_CA_FILE names
// a CA certificate; S3_URI_STYLE=host selects host-style addressing.
// ok is false when S3_ENDPOINT is not set.
func S3FromEnv(getenv func(string) string) (r Repository, ok bool, err error) {
	ep := getenv("S3_ENDPOINT")
	if ep == "" {
		return Repository{}, false, nil
	}
	r = Repository{Kind: fsm.RepoS3, Path: getenv("S3_PATH"), S3: S3{
		Endpoint: ep, Bucket: getenv("S3_BUCKET"), Region: getenv("S3_REGION"), CAFile: getenv("S3_CA_FILE"),
		HostStyle: getenv("S3_URI_STYLE") == "host",
	}}
	vals := map[string]string{}
	if f := getenv("S3_CREDENTIALS_FILE"); f != "" {
		if vals, err = readCredentials(f); err != nil {
			return r, true, err
		}
	}
	pick := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
			if v := vals[n]; v != "" {
				return v
			}
		}
		return ""
	}
	r.S3.KeyID = pick("S3_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID")
	r.S3.Secret = pick("S3_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY")
	if r.S3.Region == "" {
		r.S3.Region = "us-east-1"
	}
	if r.Path == "" {
		r.Path = DefaultS3Path
	}
	return r, true, r.Validate()
}

// readCredentials reads KEY=VALUE lines; errors never quote a value.
func readCredentials(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("S3_CREDENTIALS_FILE: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("S3_CREDENTIALS_FILE %s line %d is not KEY=VALUE", path, n)
		}
		out[strings.TrimSpace(k)] = strings.Trim(strings.TrimSpace(v), `"'`)
	}
	return out, sc.Err()
}

// Validate checks that the repository is complete; messages name the
// setting to fix and never a secret.
func (r Repository) Validate() error {
	if strings.ContainsAny(r.Path, "\n\r") {
		return errors.New("the repository path must be one line")
	}
	switch r.Kind {
	case fsm.RepoPosix:
		if !strings.HasPrefix(r.Path, "/") {
			return fmt.Errorf("the backup repository %q must be an absolute path (--backup-repo)", r.Path)
		}
	case fsm.RepoS3:
		if _, _, err := r.S3.hostPort(); err != nil {
			return err
		}
		switch {
		case r.S3.Bucket == "":
			return errors.New("S3_ENDPOINT is set but S3_BUCKET is not: name the bucket backups go to")
		case r.S3.KeyID == "" || r.S3.Secret == "":
			return errors.New("S3_ENDPOINT is set but the credentials are missing: set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or S3_CREDENTIALS_FILE")
		case !strings.HasPrefix(r.Path, "/"):
			return fmt.Errorf("S3_PATH %q must start with /", r.Path)
		}
		for _, v := range []string{r.S3.Bucket, r.S3.Region, r.S3.KeyID, r.S3.Secret, r.S3.CAFile, r.CipherPass} {
			if strings.ContainsAny(v, "\n\r") {
				return errors.New("S3 settings and credentials must be single lines")
			}
		}
	default:
		return fmt.Errorf("repository kind %q must be %s or %s", r.Kind, fsm.RepoPosix, fsm.RepoS3)
	}
	return nil
}

// hostPort splits the endpoint into host and port (443 by default).
func (s S3) hostPort() (string, int, error) {
	ep := s.Endpoint
	if strings.Contains(ep, "://") {
		u, err := url.Parse(ep)
		if err != nil || u.Host == "" {
			return "", 0, fmt.Errorf("S3_ENDPOINT %q is not host[:port] or an https URL", s.Endpoint)
		}
		if u.Scheme != "https" {
			return "", 0, fmt.Errorf("S3_ENDPOINT %q: pgBackRest reaches S3 over TLS only; use https", s.Endpoint)
		}
		ep = u.Host
	}
	host, port := ep, 443
	if h, p, err := net.SplitHostPort(ep); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return "", 0, fmt.Errorf("S3_ENDPOINT %q has an invalid port", s.Endpoint)
		}
		host, port = h, n
	}
	if host == "" || strings.ContainsAny(host, " \n\r/") {
		return "", 0, fmt.Errorf("S3_ENDPOINT %q is not host[:port] or an https URL", s.Endpoint)
	}
	return host, port, nil
}

// Describe returns the repository without its secrets.
func (r Repository) Describe() fsm.BackupRepo {
	d := fsm.BackupRepo{Kind: r.Kind, Path: r.Path}
	if r.Kind == fsm.RepoS3 {
		d.Bucket, d.Endpoint, d.Region = r.S3.Bucket, r.S3.Endpoint, r.S3.Region
	}
	d.Encrypted = r.CipherPass != ""
	return d
}

// config returns the repo1-* lines of pgbackrest.conf.
func (r Repository) config() []string {
	lines := []string{"repo1-path=" + r.Path}
	if r.Kind == fsm.RepoS3 {
		host, port, _ := r.S3.hostPort()
		style := "path"
		if r.S3.HostStyle {
			style = "host"
		}
		lines = append(lines, "repo1-type=s3", "repo1-s3-endpoint="+host, "repo1-storage-port="+strconv.Itoa(port),
			"repo1-s3-bucket="+r.S3.Bucket, "repo1-s3-region="+r.S3.Region, "repo1-s3-uri-style="+style,
			"repo1-s3-key="+r.S3.KeyID, "repo1-s3-key-secret="+r.S3.Secret)
		if r.S3.CAFile != "" {
			lines = append(lines, "repo1-storage-ca-file="+r.S3.CAFile)
		}
	}
	if r.CipherPass != "" {
		lines = append(lines, "repo1-cipher-type=aes-256-cbc", "repo1-cipher-pass="+r.CipherPass)
	}
	return lines
}
