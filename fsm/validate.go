package fsm

import (
	"math"
	"net/url"
	"regexp"
	"sort"
)

// Limits on registry objects. They keep a single command well under the
// HTTP body limit and keep snapshots small.
const (
	MaxLabels        = 64
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 1024
	MaxMirrors       = 16
	MaxTables        = 256
	MaxPIIColumns    = 64
	MaxURLLen        = 2048
)

var (
	identRe     = regexp.MustCompile(`^[a-z_][a-z0-9_]{0,62}$`)
	tableNameRe = regexp.MustCompile(`^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$`)
	validStatus = map[string]bool{RegionActive: true, RegionMaintenance: true, RegionDraining: true}
	validTier   = map[string]bool{TierStaging: true, TierProduction: true}
	// reservedRegionNames are path words under /v1/regions/.
	reservedRegionNames = map[string]bool{"nearest": true}
)

// ValidRegionName reports whether name is a DNS label (RFC 1123, lower case).
func ValidRegionName(name string) bool { return edged(name, lowerAlnum, dnsMiddle) }

// ValidTenantID reports whether id is a valid tenant id: lower-case letters,
// digits, '-' and '_', 1 to 63 characters, starting and ending alphanumeric.
func ValidTenantID(id string) bool { return edged(id, lowerAlnum, tenantMiddle) }

// validLabelKey reports whether k is a label key: letters, digits and
// ". _ / -", 1 to 63 characters, starting and ending alphanumeric.
func validLabelKey(k string) bool { return edged(k, alnum, labelMiddle) }

// edged reports whether s has 1 to 63 bytes, starts and ends with a byte
// edge accepts, and has only bytes middle accepts in between. The names
// checked on every write are matched this way rather than by regexp: it is
// ten times faster, and the regexps they replace are kept in the tests.
func edged(s string, edge, middle func(byte) bool) bool {
	n := len(s)
	if n == 0 || n > 63 || !edge(s[0]) || !edge(s[n-1]) {
		return false
	}
	for i := 1; i < n-1; i++ {
		if !middle(s[i]) {
			return false
		}
	}
	return true
}

func lowerAlnum(c byte) bool   { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }
func alnum(c byte) bool        { return lowerAlnum(c) || c >= 'A' && c <= 'Z' }
func dnsMiddle(c byte) bool    { return lowerAlnum(c) || c == '-' }
func tenantMiddle(c byte) bool { return dnsMiddle(c) || c == '_' }
func labelMiddle(c byte) bool  { return alnum(c) || c == '.' || c == '_' || c == '/' || c == '-' }

// NormalizeRegion fills defaults (tier staging, status active) into r and
// drops empty collections, so that what is stored equals what was sent.
func NormalizeRegion(r *Region) {
	if len(r.Labels) == 0 {
		r.Labels = nil
	}
	if r.Tier == "" {
		r.Tier = TierStaging
	}
	if r.Status == "" {
		r.Status = RegionActive
	}
}

// ValidateRegion checks a region's user-supplied fields. It does not look at
// the state; Apply does that.
func ValidateRegion(r *Region) error {
	if !ValidRegionName(r.Name) {
		return invalidf("invalid_region_name", "region name %q must be a DNS label: 1-63 lower-case letters, digits or '-', starting and ending with a letter or digit", r.Name)
	}
	if reservedRegionNames[r.Name] {
		return invalidf("invalid_region_name", "region name %q is reserved by the API (/v1/regions/%s); pick another", r.Name, r.Name)
	}
	if err := validateURL(r.URL); err != nil {
		return err
	}
	if err := validateAppURL(r.AppURL, r.URL); err != nil {
		return err
	}
	if !validTier[r.Tier] {
		return invalidf("invalid_tier", "tier %q must be %q or %q", r.Tier, TierStaging, TierProduction)
	}
	if !validStatus[r.Status] {
		return invalidf("invalid_status", "status %q must be one of active, maintenance, draining", r.Status)
	}
	if err := validateLocation(r.Location); err != nil {
		return err
	}
	return validateLabels(r.Labels)
}

func validateURL(raw string) error {
	if raw == "" {
		return invalidf("invalid_url", "url is required (the region's API endpoint, e.g. https://eu-west.example.com:8401)")
	}
	if len(raw) > MaxURLLen {
		return invalidf("invalid_url", "url is longer than %d bytes", MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalidf("invalid_url", "url %q must be an absolute http or https URL", raw)
	}
	return nil
}

// validateAppURL checks a region's application endpoint: empty (none), or
// an absolute https URL without credentials, query or fragment, since
// every token holder reads it in GET /v1/route. http is accepted only
// when the region's API URL is http too: a plaintext (dev or test)
// federation; a TLS federation never sends tenants' traffic in clear.
func validateAppURL(raw, apiURL string) error {
	if raw == "" {
		return nil
	}
	if len(raw) > MaxURLLen {
		return invalidf("invalid_app_url", "app_url is longer than %d bytes", MaxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return invalidf("invalid_app_url", "app_url %q must be an absolute https URL (the tenant-facing application of the region, e.g. https://app.eu-west.example.com)", raw)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return invalidf("invalid_app_url", "app_url %q must not carry credentials, a query or a fragment: every token holder reads it", raw)
	}
	if u.Scheme == "http" {
		if api, err := url.Parse(apiURL); err != nil || api.Scheme != "http" {
			return invalidf("invalid_app_url", "app_url %q is http but the region's url is not: use https (http is only for a plaintext federation)", raw)
		}
	}
	return nil
}

func validateLocation(l Location) error {
	if math.IsNaN(l.Lat) || l.Lat < -90 || l.Lat > 90 {
		return invalidf("invalid_location", "location.lat %v must be within [-90, 90]", l.Lat)
	}
	if math.IsNaN(l.Lon) || l.Lon < -180 || l.Lon > 180 {
		return invalidf("invalid_location", "location.lon %v must be within [-180, 180]", l.Lon)
	}
	return nil
}

func validateLabels(labels map[string]string) error {
	if len(labels) > MaxLabels {
		return invalidf("invalid_labels", "at most %d labels are allowed, got %d", MaxLabels, len(labels))
	}
	for k, v := range labels {
		if !validLabelKey(k) || len(k) > MaxLabelKeyLen {
			return invalidf("invalid_labels", "label key %q must be 1-%d characters of letters, digits, '.', '_', '-', '/'", k, MaxLabelKeyLen)
		}
		if len(v) > MaxLabelValueLen {
			return invalidf("invalid_labels", "label %q: value is longer than %d bytes", k, MaxLabelValueLen)
		}
	}
	return nil
}

// NormalizeTenant sorts a tenant's mirrors, tables and PII columns and drops
// empty collections, so that equal specs have equal encodings and what is
// stored equals what was sent.
func NormalizeTenant(t *Tenant) {
	if len(t.Mirrors) == 0 {
		t.Mirrors = nil
	}
	if len(t.Tables) == 0 {
		t.Tables = nil
	}
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
	sort.Strings(t.Mirrors)
	sort.Slice(t.Tables, func(i, j int) bool { return t.Tables[i].Name < t.Tables[j].Name })
	for i := range t.Tables {
		if len(t.Tables[i].PIIColumns) == 0 {
			t.Tables[i].PIIColumns = nil
		}
		sort.Strings(t.Tables[i].PIIColumns)
	}
}

// ValidateTenant checks a tenant's user-supplied fields. Whether its regions
// exist is checked by Apply against the state.
func ValidateTenant(t *Tenant) error {
	if !ValidTenantID(t.ID) {
		return invalidf("invalid_tenant_id", "tenant id %q must be 1-63 lower-case letters, digits, '-' or '_', starting and ending with a letter or digit", t.ID)
	}
	if !ValidRegionName(t.HomeRegion) {
		return invalidf("invalid_home_region", "home_region %q must be a region name (a DNS label)", t.HomeRegion)
	}
	if len(t.Mirrors) > MaxMirrors {
		return invalidf("invalid_mirrors", "at most %d mirrors are allowed, got %d", MaxMirrors, len(t.Mirrors))
	}
	seen := make(map[string]bool, len(t.Mirrors))
	for _, m := range t.Mirrors {
		switch {
		case !ValidRegionName(m):
			return invalidf("invalid_mirrors", "mirror %q must be a region name (a DNS label)", m)
		case m == t.HomeRegion:
			return invalidf("invalid_mirrors", "mirror %q is the tenant's home region; a region cannot mirror itself", m)
		case seen[m]:
			return invalidf("invalid_mirrors", "mirror %q is listed twice", m)
		}
		seen[m] = true
	}
	if err := validateTables(t.Tables); err != nil {
		return err
	}
	if err := validateSync(t); err != nil {
		return err
	}
	if err := validateFailoverPolicy(t.Failover); err != nil {
		return err
	}
	return validateLabels(t.Labels)
}

// validateSync checks the synchronous replication policy of a tenant. The
// fallback and its bound only mean something in sync mode, so they are
// refused in async mode rather than silently ignored.
func validateSync(t *Tenant) error {
	switch t.SyncMode {
	case "", SyncModeAsync, SyncModeSync:
	default:
		return invalidf("invalid_sync_mode", "sync_mode %q must be %q (the default) or %q", t.SyncMode, SyncModeAsync, SyncModeSync)
	}
	switch t.SyncFallback {
	case "", SyncFallbackDegrade, SyncFallbackWait:
	default:
		return invalidf("invalid_sync_fallback", "sync_fallback %q must be %q (the default) or %q", t.SyncFallback, SyncFallbackDegrade, SyncFallbackWait)
	}
	d := t.SyncDegradeAfterMS
	if d != 0 && (d < MinSyncDegradeAfterMS || d > MaxSyncDegradeAfterMS) {
		return invalidf("invalid_sync_degrade_after", "sync_degrade_after_ms %d must be between %d and %d", d, MinSyncDegradeAfterMS, MaxSyncDegradeAfterMS)
	}
	if t.SyncMode != SyncModeSync && (t.SyncFallback != "" || d != 0) {
		return invalidf("invalid_sync_fallback", "sync_fallback and sync_degrade_after_ms apply only with sync_mode %q", SyncModeSync)
	}
	if t.SyncMode == SyncModeSync && len(t.Mirrors) == 0 {
		return invalidf("invalid_sync_mode", "sync_mode %q needs at least one mirror to wait for", SyncModeSync)
	}
	return nil
}

func validateTables(tables []TenantTable) error {
	if len(tables) > MaxTables {
		return invalidf("invalid_tables", "at most %d tables are allowed, got %d", MaxTables, len(tables))
	}
	seen := make(map[string]bool, len(tables))
	for _, tb := range tables {
		if !tableNameRe.MatchString(tb.Name) {
			return invalidf("invalid_tables", "table name %q must be a lower-case SQL identifier, optionally schema-qualified", tb.Name)
		}
		if seen[tb.Name] {
			return invalidf("invalid_tables", "table %q is listed twice", tb.Name)
		}
		seen[tb.Name] = true
		if len(tb.PIIColumns) > MaxPIIColumns {
			return invalidf("invalid_tables", "table %q: at most %d PII columns are allowed", tb.Name, MaxPIIColumns)
		}
		cols := make(map[string]bool, len(tb.PIIColumns))
		for _, c := range tb.PIIColumns {
			if !identRe.MatchString(c) {
				return invalidf("invalid_tables", "table %q: PII column %q must be a lower-case SQL identifier", tb.Name, c)
			}
			if c == "tenant_id" {
				return invalidf("invalid_tables", "table %q: tenant_id is the tenant key and cannot be a PII column", tb.Name)
			}
			if cols[c] {
				return invalidf("invalid_tables", "table %q: PII column %q is listed twice", tb.Name, c)
			}
			cols[c] = true
		}
	}
	return nil
}
