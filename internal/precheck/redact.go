package precheck

import (
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Mask replaces a secret wherever one would have appeared.
const Mask = "xxxxx"

// Redactor removes known secrets from text. Secrets are collected from the
// configuration (DSN passwords in every spelling a DSN allows, and any
// extra secret the caller names), and every output of the precheck passes
// through Redact, including error messages of libraries that may echo a
// DSN back.
type Redactor struct {
	secrets []string // longest first, so a secret containing another is masked whole
}

// NewRedactor returns a Redactor for the secrets of cfg.
func NewRedactor(cfg Config) *Redactor {
	r := &Redactor{}
	for _, p := range DSNPasswords(cfg.PostgresDSN) {
		r.add(p)
	}
	for _, s := range cfg.Secrets {
		r.add(s)
	}
	for _, u := range []string{cfg.RegistryURL, cfg.VaultAddr, cfg.RedisURL, cfg.PromURL, cfg.S3Endpoint} {
		if pu, err := url.Parse(u); err == nil && pu.User != nil {
			if p, ok := pu.User.Password(); ok {
				r.add(p)
			}
		}
	}
	sort.Slice(r.secrets, func(i, j int) bool { return len(r.secrets[i]) > len(r.secrets[j]) })
	return r
}

func (r *Redactor) add(s string) {
	if s == "" || s == Mask {
		return
	}
	for _, v := range []string{s, url.QueryEscape(s), url.PathEscape(s), strings.ReplaceAll(s, `'`, `\'`)} {
		if !slices.Contains(r.secrets, v) {
			r.secrets = append(r.secrets, v)
		}
	}
}

// Redact masks every known secret in s, and any password written in a
// DSN-like way (password=..., user:pass@host) even if it is not known.
func (r *Redactor) Redact(s string) string {
	for _, sec := range r.secrets {
		s = strings.ReplaceAll(s, sec, Mask)
	}
	s = kvPassword.ReplaceAllString(s, "${1}="+Mask)
	s = urlUserinfo.ReplaceAllString(s, "${1}:"+Mask+"@")
	return s
}

var (
	// kvPassword matches password=value (quoted or not) in keyword/value
	// DSNs and in URL query strings.
	kvPassword = regexp.MustCompile(`(?i)\b((?:ssl)?password)\s*=\s*(?:'(?:[^'\\]|\\.)*'|[^\s&]*)`)
	// urlUserinfo matches the password of scheme://user:password@host.
	urlUserinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*):[^@\s/]*@`)
)

// DSNPasswords returns the passwords a PostgreSQL DSN carries, in URL form
// (userinfo, ?password=, ?sslpassword=) or keyword/value form
// (password=... or password='...'), both as written and decoded.
func DSNPasswords(dsn string) []string {
	var out []string
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		// As written, even when the URL does not parse.
		rest := dsn[strings.Index(dsn, "://")+3:]
		if at := strings.LastIndex(strings.SplitN(rest, "/", 2)[0], "@"); at >= 0 {
			if _, pw, ok := strings.Cut(rest[:at], ":"); ok {
				out = append(out, pw)
				if dec, err := url.PathUnescape(pw); err == nil {
					out = append(out, dec)
				}
			}
		}
		if u, err := url.Parse(dsn); err == nil {
			if u.User != nil {
				if pw, ok := u.User.Password(); ok {
					out = append(out, pw)
				}
			}
			q := u.Query()
			out = append(out, q.Get("password"), q.Get("sslpassword"))
		}
	}
	for _, m := range kvPasswordValue.FindAllStringSubmatch(dsn, -1) {
		v := m[1]
		out = append(out, v)
		if strings.HasPrefix(v, "'") && strings.HasSuffix(v, "'") && len(v) >= 2 {
			u := v[1 : len(v)-1]
			out = append(out, u, strings.NewReplacer(`\'`, `'`, `\\`, `\`).Replace(u))
		}
		if dec, err := url.QueryUnescape(v); err == nil {
			out = append(out, dec)
		}
	}
	var clean []string
	for _, p := range out {
		if p != "" && !slices.Contains(clean, p) {
			clean = append(clean, p)
		}
	}
	return clean
}

var kvPasswordValue = regexp.MustCompile(`(?i)\b(?:ssl)?password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s&]*)`)

// RedactDSN returns dsn with its passwords masked, for display.
func RedactDSN(dsn string) string {
	return NewRedactor(Config{PostgresDSN: dsn}).Redact(dsn)
}

// RedactURL returns u with a userinfo password masked.
func RedactURL(u string) string {
	pu, err := url.Parse(u)
	if err != nil {
		return urlUserinfo.ReplaceAllString(u, "${1}:"+Mask+"@")
	}
	return pu.Redacted()
}
