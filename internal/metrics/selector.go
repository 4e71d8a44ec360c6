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

// MayMatchName reports whether some selector can select a series named
// name, looking at its __name__ matchers only (a cheap pre-filter per
// family).
func (s Selectors) MayMatchName(name string) bool {
	for _, set := range s {
		ok := true
		for _, m := range set {
			if m.Name == labels.MetricName && !m.Matches(name) {
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

// Matches reports whether the series name{m's labels} is selected. A
// label the series lacks has the value "", as in PromQL.
func (s Selectors) Matches(name string, m *dto.Metric) bool {
	for _, set := range s {
		ok := true
		for _, mt := range set {
			if !mt.Matches(labelValue(name, m, mt.Name)) {
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
