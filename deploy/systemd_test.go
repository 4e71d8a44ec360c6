package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// unit is a systemd unit file: its keys by section, in order.
type unit map[string][]struct{ key, value string }

// parseUnit reads a unit file as systemd does: comments, sections,
// key=value and backslash continuation lines.
func parseUnit(t *testing.T, text string) unit {
	t.Helper()
	u := unit{}
	section := ""
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		line := strings.TrimSpace(lines[i])
		for strings.HasSuffix(line, "\\") && i+1 < len(lines) {
			i++
			next := strings.TrimSpace(lines[i])
			if strings.HasPrefix(next, "#") || strings.HasPrefix(next, ";") {
				continue
			}
			line = strings.TrimSuffix(line, "\\") + " " + next
		}
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %q", line)
			}
			u[section] = append(u[section], struct{ key, value string }{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return u
}

func (u unit) all(section, key string) []string {
	var out []string
	for _, kv := range u[section] {
		if kv.key == key {
			out = append(out, kv.value)
		}
	}
	return out
}

func (u unit) get(section, key string) string {
	v := u.all(section, key)
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

// parseEnvFile reads an EnvironmentFile: KEY=VALUE lines, comments, and
// values in single or double quotes.
func parseEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	return env
}

// execStartArgv turns an ExecStart line into argv as systemd does:
// specifiers (%d, %%), then words (quotes respected), ${VAR} replaced
// inside a word, and a word that is $VAR alone split on whitespace
// (dropped when empty).
func execStartArgv(line string, env map[string]string, credsDir string) []string {
	line = strings.NewReplacer("%d", credsDir, "%%", "%").Replace(line)
	var words []string
	var cur strings.Builder
	inWord, quote := false, byte(0)
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quote != 0 && c == quote:
			quote = 0
		case quote != 0:
			cur.WriteByte(c)
		case c == '"' || c == '\'':
			quote, inWord = c, true
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	braced := regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)
	var argv []string
	for _, w := range words {
		if m := regexp.MustCompile(`^\$([A-Za-z_][A-Za-z0-9_]*)$`).FindStringSubmatch(w); m != nil {
			argv = append(argv, strings.Fields(env[m[1]])...)
			continue
		}
		argv = append(argv, braced.ReplaceAllStringFunc(w, func(m string) string { return env[m[2:len(m)-1]] }))
	}
	return argv
}

// vm is one machine of the install guide, rooted in a directory: its
// /etc/atomfed, /var/lib and /usr/local/bin live under root.
type vm struct {
	root string
}

func (v vm) path(p string) string { return filepath.Join(v.root, p) }

// service is a unit started on a vm the way systemd starts it.
type service struct {
	name string
	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan error
}

// start runs the unit's ExecStart on the vm as systemd would: its
// EnvironmentFiles as the whole environment (plus what systemd sets), its
// LoadCredential files copied into a credentials directory (%d), its
// StateDirectory made 0700, and every absolute path of the unit rooted in
// the vm's directory.
func (v vm) start(t *testing.T, unitFile string) *service {
	t.Helper()
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.NewReplacer("/etc/atomfed/", v.path("/etc/atomfed")+"/", "/var/lib/", v.path("/var/lib")+"/", "/usr/local/bin/", v.path("/usr/local/bin")+"/").Replace(string(b))
	u := parseUnit(t, text)
	name := filepath.Base(unitFile)
	env := map[string]string{}
	for _, f := range u.all("Service", "EnvironmentFile") {
		for k, val := range parseEnvFile(t, strings.TrimPrefix(f, "-")) {
			env[k] = val
		}
	}
	creds := v.path("/run/credentials/" + name)
	if err := os.MkdirAll(creds, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, lc := range u.all("Service", "LoadCredential") {
		id, src, _ := strings.Cut(lc, ":")
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("%s: LoadCredential=%s: %v", name, lc, err)
		}
		if err := os.WriteFile(filepath.Join(creds, id), data, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	state := v.path("/var/lib/" + u.get("Service", "StateDirectory"))
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	env["CREDENTIALS_DIRECTORY"], env["STATE_DIRECTORY"], env["HOME"] = creds, state, state
	env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
	argv := execStartArgv(u.get("Service", "ExecStart"), env, creds)
	s := &service{name: name, log: &bytes.Buffer{}, done: make(chan error, 1)}
	s.cmd = exec.Command(argv[0], argv[1:]...)
	for k, val := range env {
		s.cmd.Env = append(s.cmd.Env, k+"="+val)
	}
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("%s on %s:\n%s", name, v.root, s.log.String())
		}
	})
	return s
}

// stop sends the unit's KillSignal and waits up to its TimeoutStopSec.
func (s *service) stop(t *testing.T, unitFile string) error {
	t.Helper()
	b, _ := os.ReadFile(unitFile)
	u := parseUnit(t, string(b))
	if u.get("Service", "KillSignal") != "SIGTERM" {
		t.Fatalf("%s: KillSignal=%s", s.name, u.get("Service", "KillSignal"))
	}
	timeout, err := strconv.Atoi(u.get("Service", "TimeoutStopSec"))
	if err != nil {
		t.Fatal(err)
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.done:
		return err
	case <-time.After(time.Duration(timeout) * time.Second):
		return fmt.Errorf("%s did not stop within TimeoutStopSec=%d", s.name, timeout)
	}
}

// fillEnv writes an example environment file with some values replaced,
// as the install guide has the operator do.
func fillEnv(t *testing.T, example, dst string, set map[string]string) {
	t.Helper()
	b, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	for _, line := range strings.Split(strings.TrimRight(string(b), "\n"), "\n") {
		k, _, ok := strings.Cut(strings.TrimPrefix(line, "#"), "=")
		if v, want := set[k]; ok && want && !strings.Contains(k, " ") {
			line, seen[k] = k+"="+v, true
		}
		out = append(out, line)
	}
	for k := range set {
		if !seen[k] {
			t.Fatalf("%s has no %s", example, k)
		}
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

var (
	portsMu    sync.Mutex
	portsGiven = map[int]bool{}
)

// freePort returns a port on 127.0.0.1 free for TCP and UDP a moment ago,
// drawn below the kernel's ephemeral range (as internal/testing/testutil's
// PickPort does, which this module cannot import): a port from that range
// can be taken by any outgoing connection of the busy machine before the
// test's server binds it. No port is handed out twice in one run.
func freePort(t *testing.T) int {
	t.Helper()
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const floor = 20000
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 200 {
		p := floor + rand.IntN(low-floor)
		if portsGiven[p] {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		ln.Close()
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			continue
		}
		pc.Close()
		portsGiven[p] = true
		return p
	}
	t.Fatalf("no free port below %d", low)
	return 0
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}

// raftPeer is a line of `atomfed operator raft list-peers -o json`.
type raftPeer struct {
	ID    string `json:"id"`
	Voter bool   `json:"voter"`
}

// TestSystemdUnitsVerify: systemd-analyze verify finds nothing in either
// unit; the binary path is pointed at the test
// build, which is all verify needs of the file system.
func TestSystemdUnitsVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Fatalf("this test needs systemd-analyze (apt-get install systemd, as .ci/run does): %v", err)
	}
	dir := t.TempDir()
	for _, name := range []string{"atomfed-server.service", "atomfed-agent.service"} {
		b, err := os.ReadFile("systemd/" + name)
		if err != nil {
			t.Fatal(err)
		}
		u := parseUnit(t, string(b))
		for _, want := range []string{"User", "ProtectSystem", "NoNewPrivileges", "StateDirectory", "Restart", "EnvironmentFile", "CapabilityBoundingSet", "SystemCallFilter"} {
			if len(u.all("Service", want)) == 0 {
				t.Errorf("%s has no %s=", name, want)
			}
		}
		if u.get("Service", "ProtectSystem") != "strict" || u.get("Service", "NoNewPrivileges") != "yes" || u.get("Service", "Restart") != "on-failure" || u.get("Service", "User") == "root" {
			t.Errorf("%s: ProtectSystem=%s NoNewPrivileges=%s Restart=%s User=%s", name, u.get("Service", "ProtectSystem"), u.get("Service", "NoNewPrivileges"), u.get("Service", "Restart"), u.get("Service", "User"))
		}
		if stop, _ := strconv.Atoi(u.get("Service", "TimeoutStopSec")); stop <= 15 {
			t.Errorf("%s: TimeoutStopSec=%d must exceed the 15 s graceful leave", name, stop)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, bytes.ReplaceAll(b, []byte("/usr/local/bin/atomfed"), []byte(atomfedBin)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	check := func(files ...string) (string, error) {
		out, err := exec.Command(sa, append([]string{"verify", "--man=no"}, files...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := check(filepath.Join(dir, "atomfed-server.service"), filepath.Join(dir, "atomfed-agent.service")); err != nil || out != "" {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	// verify reports a bad key on its output and still exits 0: the check
	// above must see output as a failure.
	bad := filepath.Join(dir, "bad.service")
	_ = os.WriteFile(bad, []byte("[Service]\nExecStart="+atomfedBin+"\nProtectSystem=bogus\n"), 0o644)
	if out, _ := check(bad); !strings.Contains(out, "protect system") {
		t.Errorf("systemd-analyze verify does not report a bad value: %q", out)
	}
}

// TestSystemdUnitsStartAFederation: three VMs set up as
// docs/install-systemd.md says (secrets from `atomfed secrets init`, the
// example environment files filled in), each server started from
// atomfed-server.service's ExecStart with its environment files and
// credentials, with the binary taken out of the image `make image` builds;
// they form a federation, a region is registered through it and seen on
// every server, an agent started from atomfed-agent.service joins, and a
// server stopped as systemd stops it (SIGTERM) leaves within
// TimeoutStopSec, exits 0 and the others carry on.
func TestSystemdUnitsStartAFederation(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers")
	}
	dir := t.TempDir()
	_, files, _ := buildImageTarball(t, dir)
	admin := filepath.Join(dir, "admin")
	secrets := filepath.Join(admin, "secrets")
	bin := filepath.Join(admin, "atomfed")
	if err := os.MkdirAll(admin, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, files["/usr/local/bin/atomfed"].body, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + admin}, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run(nil, "secrets", "init", "--out", secrets, "--server-name", "s1,s2,s3", "--agent-name", "us-east-a1"); err != nil {
		t.Fatalf("secrets init: %v\n%s", err, out)
	}
	token, _ := os.ReadFile(filepath.Join(secrets, "federation-token"))
	type ports struct{ http, raft, serf int }
	var ps []ports
	for range 3 {
		ps = append(ps, ports{freePort(t), freePort(t), freePort(t)})
	}
	serf := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ps[i].serf) }
	var vms []vm
	var servers []*service
	for i := range 3 {
		v := vm{root: filepath.Join(dir, fmt.Sprintf("vm%d", i+1))}
		vms = append(vms, v)
		copyFile(t, filepath.Join(admin, "atomfed"), v.path("/usr/local/bin/atomfed"), 0o755)
		copyFile(t, filepath.Join(secrets, "ca.pem"), v.path("/etc/atomfed/tls/ca.pem"), 0o644)
		copyFile(t, filepath.Join(secrets, "server.pem"), v.path("/etc/atomfed/tls/server.pem"), 0o644)
		copyFile(t, filepath.Join(secrets, "server-key.pem"), v.path("/etc/atomfed/tls/server-key.pem"), 0o600)
		copyFile(t, filepath.Join(secrets, "gossip.key"), v.path("/etc/atomfed/gossip.key"), 0o600)
		var others []string
		for j := range 3 {
			if j != i {
				others = append(others, serf(j))
			}
		}
		fillEnv(t, "systemd/server.env.example", v.path("/etc/atomfed/server.env"), map[string]string{
			"ATOMFED_NODE": fmt.Sprintf("s%d", i+1), "ATOMFED_REGION": []string{"us-east", "eu-west", "ap-south"}[i],
			"ATOMFED_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", ps[i].http), "ATOMFED_RAFT_ADDR": fmt.Sprintf("127.0.0.1:%d", ps[i].raft),
			"ATOMFED_SERF_ADDR": serf(i), "ATOMFED_JOIN": strings.Join(others, ","),
		})
		fillEnv(t, "systemd/server-secrets.env.example", v.path("/etc/atomfed/server-secrets.env"), map[string]string{"FEDERATION_TOKEN": strings.TrimSpace(string(token))})
		servers = append(servers, v.start(t, "systemd/atomfed-server.service"))
	}
	// Every server knows the leader (/health over plain HTTP, no token).
	health := func(i int) (map[string]any, error) {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/health", ps[i].http))
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		var h map[string]any
		return h, json.NewDecoder(resp.Body).Decode(&h)
	}
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < 3; {
		if h, err := health(i); err == nil && h["known_leader"] == true {
			i++
			continue
		}
		for _, s := range servers {
			select {
			case err := <-s.done:
				t.Fatalf("%s exited: %v\n%s", s.name, err, s.log)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server %d knows no leader after 60 s", i+1)
		}
		time.Sleep(200 * time.Millisecond)
	}
	cli := func(i int, env []string, args ...string) (string, error) {
		return run(append([]string{"ATOMFED_ADDR=" + fmt.Sprintf("https://127.0.0.1:%d", ps[i].http), "ATOMFED_CACERT=" + filepath.Join(secrets, "ca.pem"),
			"FEDERATION_TOKEN=" + strings.TrimSpace(string(token))}, env...), args...)
	}
	// Register a region through the federation, signed with its own key.
	keyEnv := []string{"COSIGN_PASSWORD=", "COSIGN_KEY_PATH=" + filepath.Join(admin, "keys", "sa-east.key")}
	if out, err := run(keyEnv, "keygen", "--out", filepath.Join(admin, "keys", "sa-east")); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	if out, err := cli(1, keyEnv, "region", "register", "--name", "sa-east", "--url", "https://sa-east.example.com:8401", "--tier", "staging"); err != nil {
		t.Fatalf("region register: %v\n%s", err, out)
	}
	for i := range 3 {
		out, err := cli(i, nil, "region", "list", "-o", "json")
		if err != nil || !strings.Contains(out, `"sa-east"`) {
			t.Errorf("server %d's region list: %v\n%s", i+1, err, out)
		}
	}
	// An agent of us-east, from atomfed-agent.service, with its own token.
	out, err := cli(0, nil, "token", "create", "--role", "agent", "--node", "us-east-a1", "--region", "us-east", "-o", "json")
	if err != nil {
		t.Fatalf("token create: %v\n%s", err, out)
	}
	var agentTok struct{ Secret string }
	if err := json.Unmarshal([]byte(out), &agentTok); err != nil || agentTok.Secret == "" {
		t.Fatalf("token create: %v: %s", err, out)
	}
	v := vms[0]
	copyFile(t, filepath.Join(secrets, "agent.pem"), v.path("/etc/atomfed/tls/agent.pem"), 0o644)
	copyFile(t, filepath.Join(secrets, "agent-key.pem"), v.path("/etc/atomfed/tls/agent-key.pem"), 0o600)
	agentHTTP, agentSerf := freePort(t), freePort(t)
	fillEnv(t, "systemd/agent.env.example", v.path("/etc/atomfed/agent.env"), map[string]string{
		"ATOMFED_NODE": "us-east-a1", "ATOMFED_REGION": "us-east", "ATOMFED_HTTP_ADDR": fmt.Sprintf("127.0.0.1:%d", agentHTTP),
		"ATOMFED_SERF_ADDR": fmt.Sprintf("127.0.0.1:%d", agentSerf), "ATOMFED_JOIN": serf(0) + "," + serf(1) + "," + serf(2),
		"ATOMFED_AGENT_FLAGS": "--log-level=info --disable-task-types=probe",
	})
	fillEnv(t, "systemd/agent-secrets.env.example", v.path("/etc/atomfed/agent-secrets.env"), map[string]string{"FEDERATION_TOKEN": agentTok.Secret})
	agent := v.start(t, "systemd/atomfed-agent.service")
	// The servers' agent registry: us-east-a1 alive, without the task type
	// its ATOMFED_AGENT_FLAGS disables.
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(secrets, "ca.pem"))
	pool.AppendCertsFromPEM(caPEM)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "server.atomfed"}}}
	agents := func() (string, []any, error) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d/v1/agents", ps[2].http), nil)
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := hc.Do(req)
		if err != nil {
			return "", nil, err
		}
		defer resp.Body.Close()
		var body struct {
			Agents []struct {
				Node         string `json:"node"`
				Status       string `json:"status"`
				Capabilities []any  `json:"capabilities"`
			} `json:"agents"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return "", nil, err
		}
		for _, a := range body.Agents {
			if a.Node == "us-east-a1" {
				return a.Status, a.Capabilities, nil
			}
		}
		return "", nil, fmt.Errorf("us-east-a1 is not in %+v", body.Agents)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		status, caps, err := agents()
		if err == nil && status == "alive" {
			if slices.Contains(caps, any("probe")) {
				t.Errorf("the agent advertises %v although its unit's flags disable probe", caps)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent is not alive on the servers after 30 s: %s %v\nagent log:\n%s", status, err, agent.log)
		}
		time.Sleep(500 * time.Millisecond)
	}
	// Stopped as `systemctl stop` stops them: SIGTERM, a clean leave, exit 0.
	if err := agent.stop(t, "systemd/atomfed-agent.service"); err != nil {
		t.Errorf("agent stop: %v\n%s", err, agent.log)
	}
	leader := -1
	for i := range 3 {
		if h, err := health(i); err == nil && h["raft_state"] == "Leader" {
			leader = i
		}
	}
	follower := (leader + 1) % 3
	start := time.Now()
	if err := servers[follower].stop(t, "systemd/atomfed-server.service"); err != nil {
		t.Fatalf("server s%d stop: %v\n%s", follower+1, err, servers[follower].log)
	}
	t.Logf("s%d left in %s", follower+1, time.Since(start).Round(time.Millisecond))
	if !strings.Contains(servers[follower].log.String(), "left the cluster") {
		t.Errorf("s%d did not leave gracefully:\n%s", follower+1, servers[follower].log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		out, err := cli((follower+1)%3, nil, "operator", "raft", "list-peers", "-o", "json")
		var peers []raftPeer
		if err == nil && json.Unmarshal([]byte(out), &peers) == nil && len(peers) == 2 && peers[0].Voter && peers[1].Voter &&
			!slices.ContainsFunc(peers, func(p raftPeer) bool { return p.ID == fmt.Sprintf("s%d", follower+1) }) {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("s%d is still a peer, or the others lost their quorum: %v\n%s", follower+1, err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if out, err := cli((follower+1)%3, nil, "region", "list", "-o", "json"); err != nil || !strings.Contains(out, `"sa-east"`) {
		t.Errorf("after s%d left: %v\n%s", follower+1, err, out)
	}
}
