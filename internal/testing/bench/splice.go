package bench

import (
	"os"
	"strings"
)

// SpliceSection writes content into path between the markers of section
// name, replacing what was there, or appends it: make bench and make
// bench-compare each keep their own part of reports/bench.md.
func SpliceSection(path, name, content string) error {
	begin, end := "<!-- BEGIN "+name+" -->", "<!-- END "+name+" -->"
	block := begin + "\n" + strings.TrimRight(content, "\n") + "\n" + end + "\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	i, j := strings.Index(s, begin), strings.Index(s, end)
	switch {
	case i >= 0 && j > i:
		s = s[:i] + block + strings.TrimPrefix(s[j+len(end):], "\n")
	case len(strings.TrimSpace(s)) == 0:
		s = block
	default:
		s = strings.TrimRight(s, "\n") + "\n\n" + block
	}
	return os.WriteFile(path, []byte(s), 0o644)
}
