package main

import (
	"strings"
	"testing"
)

// TestDevRegionsFromEnv: dev names its regions from PRIMARY_REGION and
// SECONDARY_REGIONS, defaults to its own, places known names where they
// are, and refuses a count, a name or a duplicate it cannot run.
func TestDevRegionsFromEnv(t *testing.T) {
	names := func(rs []devRegion) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.name)
		}
		return strings.Join(out, ",")
	}
	for _, c := range []struct {
		primary, secondary, want, err string
	}{
		{"", "", "us-east,eu-west,ap-south", ""},
		{"eu-central", "", "eu-central,eu-west,ap-south", ""},
		{"eu-central", "us-west, ap-northeast", "eu-central,us-west,ap-northeast", ""},
		{"", "eu-west", "", "name two"},
		{"", "eu-west,us-east", "", "twice"},
		{"Bad_Name", "", "", "DNS label"},
	} {
		t.Setenv("PRIMARY_REGION", c.primary)
		t.Setenv("SECONDARY_REGIONS", c.secondary)
		got, err := devRegionsFromEnv()
		switch {
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("%q %q: %v, want an error naming %q", c.primary, c.secondary, err, c.err)
		case c.err == "" && (err != nil || names(got) != c.want):
			t.Errorf("%q %q: %s %v, want %s", c.primary, c.secondary, names(got), err, c.want)
		}
		if c.want == "eu-central,us-west,ap-northeast" && (got[0].loc != knownLocations["eu-central"] || got[2].loc != knownLocations["ap-northeast"]) {
			t.Errorf("known regions are not placed where they are: %+v", got)
		}
	}
}

// TestSecondaryRegions: SECONDARY_REGIONS gives a tenant's default mirrors,
// never its home, each once.
func TestSecondaryRegions(t *testing.T) {
	t.Setenv("SECONDARY_REGIONS", "eu-west, us-east,eu-west ap-south")
	if got := strings.Join(secondaryRegions("us-east"), ","); got != "eu-west,ap-south" {
		t.Errorf("mirrors %s", got)
	}
}
