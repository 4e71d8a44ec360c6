// Package machine holds the facts a report of a harness run states about
// where and what it ran: the machine (CPU, cores, RAM, kernel, Go, load
// average) and the source tree (git describe). The bench tool
// (internal/testing/bench) and the chaos suite (internal/testing/chaos)
// both head their reports with them; it is its own package so that the
// chaos suite does not import the benchmark for them. It depends on
// nothing else of atomfed.
package machine

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Facts describe the machine a benchmark or chaos run ran on.
type Facts struct {
	CPU    string
	Cores  int
	RAM    string
	Kernel string
	// Disk describes the file system of the data directories (bench.Disk
	// fills it in; Detect does not know them).
	Disk    string
	Go      string
	LoadAvg string // /proc/loadavg when the run started
}

// Detect reads the machine's description from /proc.
func Detect() Facts {
	m := Facts{CPU: "unknown", RAM: "unknown", Kernel: "unknown", Cores: runtime.NumCPU(), Go: runtime.Version(), LoadAvg: "unknown"}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		m.CPU = v
	}
	if v := procField("/proc/meminfo", "MemTotal"); v != "" {
		if kb, err := strconv.ParseFloat(strings.TrimSuffix(v, " kB"), 64); err == nil {
			m.RAM = fmt.Sprintf("%.1f GiB", kb/(1<<20))
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadAvg = LoadAvg()
	return m
}

// LoadAvg returns the 1, 5 and 15 minute load averages.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// procField returns the value of the first "key : value" line of a /proc
// file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// GitDescribe returns `git describe --tags --always --dirty` of the working
// tree, or "unknown".
func GitDescribe() string {
	out, err := exec.Command("git", "describe", "--tags", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
