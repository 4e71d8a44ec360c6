package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/atomcloud/atomfed/internal/testing/procs"
	"github.com/atomcloud/atomfed/internal/testing/testutil"
)

// Etcd is a 3-member etcd cluster on loopback, started from the installed
// binary with its defaults (the WAL is fsynced), for side-by-side runs.
type Etcd struct {
	Members    []*procs.Proc
	ClientURLs []string
	Dir        string
	hc         *http.Client
}

// StartEtcd starts members etcd processes and waits for a leader.
func StartEtcd(bin string, members int) (*Etcd, error) {
	dir, err := os.MkdirTemp("", "etcd-bench-")
	if err != nil {
		return nil, err
	}
	type ports struct{ client, peer int }
	ps := make([]ports, members)
	var initial []string
	for i := range ps {
		if ps[i].client, err = procs.FreePort(); err != nil {
			return nil, err
		}
		if ps[i].peer, err = procs.FreePort(); err != nil {
			return nil, err
		}
		initial = append(initial, fmt.Sprintf("e%d=http://127.0.0.1:%d", i+1, ps[i].peer))
	}
	e := &Etcd{Dir: dir, hc: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}}
	for i, p := range ps {
		name := fmt.Sprintf("e%d", i+1)
		cu := fmt.Sprintf("http://127.0.0.1:%d", p.client)
		pu := fmt.Sprintf("http://127.0.0.1:%d", p.peer)
		proc := procs.NewProc(name, bin, filepath.Join(dir, name+".log"),
			"--name", name, "--data-dir", filepath.Join(dir, name),
			"--listen-client-urls", cu, "--advertise-client-urls", cu,
			"--listen-peer-urls", pu, "--initial-advertise-peer-urls", pu,
			"--initial-cluster", strings.Join(initial, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "atomfed-bench", "--log-level", "warn")
		if err := proc.Start(); err != nil {
			e.Close()
			return nil, err
		}
		e.Members = append(e.Members, proc)
		e.ClientURLs = append(e.ClientURLs, cu)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.WaitLeader(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

// Close kills the members and removes their data.
func (e *Etcd) Close() {
	for _, m := range e.Members {
		m.Close()
	}
	os.RemoveAll(e.Dir)
}

func (e *Etcd) post(ctx context.Context, url string, body any, out any) error {
	b, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return err
	}
	resp, err := e.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: HTTP %d: %s", url, resp.StatusCode, raw)
	}
	return json.Unmarshal(raw, out)
}

// Leader returns the index of the member that leads, asking the members.
func (e *Etcd) Leader(ctx context.Context) (int, error) {
	var last error
	for i, m := range e.Members {
		if !m.Running() {
			continue
		}
		var st struct {
			Header struct {
				MemberID string `json:"member_id"`
			} `json:"header"`
			Leader string `json:"leader"`
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := e.post(cctx, e.ClientURLs[i]+"/v3/maintenance/status", map[string]any{}, &st)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if st.Leader != "" && st.Leader != "0" && st.Leader == st.Header.MemberID {
			return i, nil
		}
	}
	if last == nil {
		last = errors.New("no member says it leads")
	}
	return -1, last
}

// WaitLeader polls Leader until one answers or ctx ends.
func (e *Etcd) WaitLeader(ctx context.Context) (int, error) {
	var leader int
	var last error
	err := testutil.PollEvery(ctx, testutil.Forever, 20*time.Millisecond, func() error {
		leader, last = e.Leader(ctx)
		return last
	})
	if err != nil {
		return -1, fmt.Errorf("etcd: no leader: %v", last)
	}
	return leader, nil
}

// WaitHealthy waits until every member answers a linearizable range.
func (e *Etcd) WaitHealthy(ctx context.Context) error {
	for i := range e.Members {
		var last error
		if err := testutil.PollEvery(ctx, testutil.Forever, 50*time.Millisecond, func() error {
			var out map[string]any
			cctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			last = e.post(cctx, e.ClientURLs[i]+"/v3/kv/range", map[string]any{"key": b64("health")}, &out)
			return last
		}); err != nil {
			return fmt.Errorf("etcd member %d: %v", i+1, last)
		}
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// EtcdOps are load-generator operations on etcd's HTTP/JSON gateway:
// puts of a fixed value and ranges of one key, over Keys keys.
type EtcdOps struct {
	HTTP           *HTTP
	Targets        []string
	Keys, ReadKeys int
	putBodies      [][]byte
	rangeBodies    [][]byte
	serialBodies   [][]byte
}

// NewEtcdOps prepares the bodies: value is valueBytes long.
func NewEtcdOps(h *HTTP, targets []string, keys, readKeys, valueBytes int) *EtcdOps {
	o := &EtcdOps{HTTP: h, Targets: targets, Keys: keys, ReadKeys: readKeys}
	value := b64(strings.Repeat("0123456789abcdef", valueBytes/16+1)[:valueBytes])
	for i := 0; i < keys; i++ {
		k := b64(fmt.Sprintf("t-%06d", i))
		pb, _ := json.Marshal(map[string]string{"key": k, "value": value})
		rb, _ := json.Marshal(map[string]any{"key": k})
		sb, _ := json.Marshal(map[string]any{"key": k, "serializable": true})
		o.putBodies, o.rangeBodies, o.serialBodies = append(o.putBodies, pb), append(o.rangeBodies, rb), append(o.serialBodies, sb)
	}
	return o
}

func (o *EtcdOps) target(client int, seq uint64) string {
	return o.Targets[(uint64(client)+seq)%uint64(len(o.Targets))]
}

// Put is an Op: POST /v3/kv/put.
func (o *EtcdOps) Put(ctx context.Context, client int, seq uint64) error {
	return o.HTTP.Do(ctx, http.MethodPost, o.target(client, seq)+"/v3/kv/put", o.putBodies[mix(client, seq)%uint64(o.Keys)])
}

// Range returns an Op: POST /v3/kv/range, linearizable unless serializable.
func (o *EtcdOps) Range(serializable bool) Op {
	bodies := o.rangeBodies
	if serializable {
		bodies = o.serialBodies
	}
	return func(ctx context.Context, client int, seq uint64) error {
		return o.HTTP.Do(ctx, http.MethodPost, o.target(client, seq)+"/v3/kv/range", bodies[mix(client, seq)%uint64(o.ReadKeys)])
	}
}

// Populate writes the first ReadKeys keys.
func (o *EtcdOps) Populate(ctx context.Context) error {
	for i := 0; i < o.ReadKeys; i++ {
		if err := o.HTTP.Do(ctx, http.MethodPost, o.Targets[i%len(o.Targets)]+"/v3/kv/put", o.putBodies[i]); err != nil {
			return err
		}
	}
	return nil
}

// EtcdWrite is a Writer request for etcd: put key id with value seq.
func EtcdWrite(target, id string, seq uint64) (string, string, []byte) {
	b, _ := json.Marshal(map[string]string{"key": b64(id), "value": b64(fmt.Sprint(seq))})
	return http.MethodPost, target + "/v3/kv/put", b
}

// VerifyEtcd reads every acknowledged write back (linearizable ranges).
func (e *Etcd) VerifyEtcd(ctx context.Context, acks []Ack) error {
	var lost []string
	for _, a := range acks {
		var out struct {
			Kvs []struct {
				Value string `json:"value"`
			} `json:"kvs"`
		}
		leader, err := e.WaitLeader(ctx)
		if err != nil {
			return err
		}
		if err := e.post(ctx, e.ClientURLs[leader]+"/v3/kv/range", map[string]any{"key": b64(a.ID)}, &out); err != nil {
			return err
		}
		if len(out.Kvs) != 1 || out.Kvs[0].Value != b64(fmt.Sprint(a.Seq)) {
			lost = append(lost, a.ID)
		}
	}
	if len(lost) > 0 {
		return fmt.Errorf("%w: %d of %d acknowledged etcd writes: %v", ErrLostWrites, len(lost), len(acks), lost)
	}
	return nil
}

// Term returns the highest raft term any member reports: it moves when a
// leader is elected.
func (e *Etcd) Term(ctx context.Context) (uint64, error) {
	var best uint64
	var last error
	for i, m := range e.Members {
		if !m.Running() {
			continue
		}
		var st struct {
			RaftTerm string `json:"raftTerm"`
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		err := e.post(cctx, e.ClientURLs[i]+"/v3/maintenance/status", map[string]any{}, &st)
		cancel()
		if err != nil {
			last = err
			continue
		}
		var t uint64
		if _, err := fmt.Sscan(st.RaftTerm, &t); err == nil && t > best {
			best = t
		}
	}
	if best == 0 {
		return 0, fmt.Errorf("no member reported its term: %v", last)
	}
	return best, nil
}
