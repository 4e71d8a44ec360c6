package metrics

import (
	"errors"
	"fmt"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// Bounds on match[] selectors.
const (
	// MaxSelectors is the most match[] parameters one request may give.
	MaxSelectors = 32
	// MaxSelectorLen is the longest one may be, in bytes.
	MaxSelectorLen = 4096
)

// Selector errors; each message says what to fix.
var (
	ErrNoSelector  = errors.New(`give at least one match[] selector, e.g. match[]={job=~".+"} or match[]=up`)
	ErrBadSelector = errors.New("invalid match[] selector")
)

// Selectors are the parsed match[] parameters: a series is selected when
// it satisfies every matcher of at least one set.
type Selectors [][]*labels.Matcher

// ParseSelectors parses match[] parameters with Prometheus' own parser
// (the syntax of its /federate), within MaxSelectors and MaxSelectorLen.
func ParseSelectors(in []string) (Selectors, error) {
	switch {
	case len(in) == 0:
		return nil, ErrNoSelector
	case len(in) > MaxSelectors:
		return nil, fmt.Errorf("%w: %d selectors, at most %d", ErrBadSelector, len(in), MaxSelectors)
	}
	p := parser.NewParser(parser.Options{})
	out := make(Selectors, 0, len(in))
	for _, s := range in {
		if len(s) > MaxSelectorLen {
			return nil, fmt.Errorf("%w: a selector of %d bytes, at most %d", ErrBadSelector, len(s), MaxSelectorLen)
		}
		ms, err := p.ParseMetricSelector(s)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %v", ErrBadSelector, s, err)
		}
		if !nonEmpty(ms) {
			return nil, fmt.Errorf("%w %q: a selector needs at least one matcher that does not match the empty value, e.g. {job=~\".+\"}", ErrBadSelector, s)
		}
		out = append(out, ms)
	}
	return out, nil
}

// nonEmpty is PromQL's rule for a vector selector: some matcher must not
// match the empty string (else it would select every series there is).
func nonEmpty(ms []*labels.Matcher) bool {
	for _, m := range ms {
		if !m.Matches("") {
			return true
		}
	}
	return false
}

// ForName returns the selectors a family named name is matched with: the
// sets whose __name__ matchers accept name, without those matchers; nil
// when none does. A set left empty selects every series of the family.
func (s Selectors) ForName(name string) FamilySelectors {
	var out FamilySelectors
	for _, set := range s {
		rest := make([]*labels.Matcher, 0, len(set))
		ok := true
		for _, m := range set {
			switch {
			case m.Name != labels.MetricName:
				rest = append(rest, m)
			case !m.Matches(name):
				ok = false
			}
		}
		if !ok {
			continue
		}
		if len(rest) == 0 {
			return FamilySelectors{all: true}
		}
		out.sets = append(out.sets, rest)
	}
	return out
}

// FamilySelectors select the series of one family (Selectors.ForName).
type FamilySelectors struct {
	all  bool
	sets [][]*labels.Matcher
}

// Any reports whether some series of the family may be selected.
func (f FamilySelectors) Any() bool { return f.all || len(f.sets) > 0 }

// Matches reports whether the family's series m is selected.
func (f FamilySelectors) Matches(m *dto.Metric) bool {
	if f.all {
		return true
	}
	for _, set := range f.sets {
		ok := true
		for _, mt := range set {
			if !mt.Matches(labelValue("", m, mt.Name)) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

func labelValue(name string, m *dto.Metric, label string) string {
	if label == labels.MetricName {
		return name
	}
	for _, l := range m.GetLabel() {
		if l.GetName() == label {
			return l.GetValue()
		}
	}
	return ""
}
